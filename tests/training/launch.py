"""Launch megacode under torchrun from tests: a free port, a timeout, captured output."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "tiny" / "pretrain.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(nproc: int, args: list[str], timeout: int = 240, env: dict | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node nproc <args>`; `args` start with `-m module` or a script."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port())] + args
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def train(nproc: int, overrides: list[str], tmp: Path, name: str, **kwargs) -> tuple[list[dict], subprocess.CompletedProcess]:
    """Run megacode.train on the tiny config; return the step history (rank 0) and the process."""
    import json

    history = tmp / f"{name}.json"
    proc = torchrun(nproc, ["-m", "megacode.train", "--config", str(TINY_CONFIG),
                            "--history-json", str(history)] + overrides, **kwargs)
    steps = json.loads(history.read_text()) if history.exists() else []
    return steps, proc

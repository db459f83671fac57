"""Launch megacode under torchrun from tests: a free port, a timeout, captured output."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from megacode.distributed.local_launch import free_port, killed_after  # noqa: F401 (free_port: tests use it)

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "tiny" / "pretrain.yaml"


def torchrun(nproc: int, args: list[str], timeout: int = 300, env: dict | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node nproc <args>`; `args` start with `-m module` or a script.

    torchrun runs in its own process group, killed whole afterwards: a worker killed by a test
    leaves dist_checkpointing's writer-queue manager process orphaned, and it would linger
    (and hold output pipes open). Output goes through files for the same reason.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port())] + args
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        with killed_after(subprocess.Popen(command, cwd=REPO, env=full_env, stdout=out, stderr=err, text=True,
                                           start_new_session=True)) as proc:
            returncode = proc.wait(timeout=timeout)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(command, returncode, out.read(), err.read())
    if check and result.returncode != 0:
        raise AssertionError(f"torchrun failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def train(nproc: int, overrides: list[str], tmp: Path, name: str, **kwargs) -> tuple[list[dict], subprocess.CompletedProcess]:
    """Run megacode.train on the tiny config; return the step history (rank 0) and the process."""
    import json

    history = tmp / f"{name}.json"
    proc = torchrun(nproc, ["-m", "megacode.train", "--config", str(TINY_CONFIG),
                            "--history-json", str(history)] + overrides, **kwargs)
    steps = json.loads(history.read_text()) if history.exists() else []
    return steps, proc

"""Both experiments of tools/reproduce.py at --scale micro, once per session, sharing one cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _reproduce(experiment: str, out: Path, cache: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(REPO / "tools" / "reproduce.py"), experiment, "--scale", "micro",
                           "--out", str(out), "--cache-dir", str(cache)], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"reproduce.py {experiment} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.fixture(scope="session")
def micro_runs(tmp_path_factory) -> dict:
    """{"fim": OUT, "lcft": OUT, "logs": {experiment: stdout}} of the two micro runs."""
    root = tmp_path_factory.mktemp("reproduce")
    cache = root / "cache"
    logs = {exp: _reproduce(exp, root / exp, cache).stdout for exp in ("fim", "lcft")}
    return {"fim": root / "fim", "lcft": root / "lcft", "cache": cache, "logs": logs}

"""One real SLURM cluster (launch/slurm/local_cluster.sh: 2 namespaced nodes) shared by every test
here, brought down at the end of the session; helpers to submit jobs and read their states."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "launch" / "slurm" / "local_cluster.sh"
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE"}


def local_cluster(*args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf"),
                    "PATH": f"{root / 'bin'}:{os.environ['PATH']}"}

    def run(self, *args: str, check: bool = True, env: dict | None = None, cwd: Path = REPO):
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=120, cwd=cwd,
                              env={**self.env, **(env or {})})
        if check:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def sbatch(self, *args: str, env: dict | None = None, cwd: Path = REPO) -> str:
        return self.run("sbatch", "--parsable", *args, env=env, cwd=cwd).stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict:
        """`scontrol show job` as a dict (ended jobs stay for MinJobAge)."""
        text = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def diagnose(self, job_id: str, lines: int = 15) -> str:
        """What SLURM says about a job, for an assertion message: its record and the daemons' log
        lines that name it (a job that fails before its script prints anything leaves only these)."""
        record = self.run("scontrol", "show", "job", job_id, check=False).stdout
        logs = []
        for log in sorted((self.root / "log").glob("slurm*.log")):
            hits = [line for line in log.read_text(errors="replace").splitlines() if re.search(rf"\b{job_id}\b", line)]
            logs.append(f"--- {log.name} (lines naming job {job_id}) ---\n" + "\n".join(hits[-lines:]))
        return record + "\n".join(logs)

    def wait(self, job_id: str, states=ENDED, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info["JobState"] in states:
                return info
            assert time.monotonic() < deadline, f"job {job_id} still {info['JobState']} after {timeout} s"
            time.sleep(0.5)


@pytest.fixture(scope="session")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("a local SLURM cluster needs root (network namespaces, slurmd)")
    root = Path(tempfile.mkdtemp(prefix="megacode-slurm-", dir="/tmp"))
    try:
        local_cluster("up", str(root), "--nodes", "2", "--cpus", "4")
        yield Cluster(root)
    finally:
        local_cluster("down", str(root), check=False)
        shutil.rmtree(root, ignore_errors=True)

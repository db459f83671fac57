"""train.sbatch on 2 real SLURM nodes, 2 gloo ranks each, TP2 x PP2 (ranks 0,1 on node1 and 2,3 on
node2: both pipeline groups cross the nodes): the losses equal a single-node torchrun's bit for
bit; preemption by SLURM's warning signal checkpoints, requeues and resumes to the same losses;
a node lost mid-run ends the job through the watchdog, and a resubmission resumes."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from megacode.checkpoint.tracker import incomplete_reason, list_steps, read_tracker, step_dir
from megacode.resilience.exit_codes import EXIT_PEER_FAILURE
from tests.faults.common import argv
from tests.slurm.conftest import local_cluster
from tests.training.launch import REPO, torchrun

ITERS = 10
HEARTBEAT_TIMEOUT_S = 10
WATCHDOG = ["fault.heartbeat_interval_s=0.5", f"fault.heartbeat_timeout_s={HEARTBEAT_TIMEOUT_S}"]
JOB_ENV = {"GPUS_PER_NODE": "0", "NPROC_PER_NODE": "2", "PYTHON": sys.executable}


def _losses(history: Path) -> dict[int, float]:
    return {s["step"]: s["loss"] for s in json.loads(history.read_text())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[int, float]:
    """The same run under one torchrun with 4 ranks, uninterrupted."""
    tmp = tmp_path_factory.mktemp("reference")
    torchrun(4, ["-m", "megacode.train"] + argv("tp2pp2", tmp / "h.json", f"train.iters={ITERS}",
                                               f"checkpoint.dir={tmp / 'ckpt'}", "checkpoint.interval=100"))
    return _losses(tmp / "h.json")


def submit(cluster, tmp: Path, *overrides: str) -> str:
    args = argv("tp2pp2", None, f"checkpoint.dir={tmp / 'ckpt'}", *WATCHDOG, *overrides)[2:]
    args += ["--history-json", str(tmp / "h.json")]  # after the overrides (argparse)
    return cluster.sbatch("--nodes=2", "--gpus-per-node=0", "--cpus-per-task=2", f"--output={tmp}/%x-%j.out",
                          "launch/slurm/train.sbatch", str(REPO / "configs/tiny/pretrain.yaml"), *args,
                          env={**JOB_ENV, "LOG_DIR": str(tmp)})


def log_of(tmp: Path) -> str:
    logs = list(tmp.glob("megacode-*.out"))
    return logs[0].read_text() if logs else ""


def wait_for_line(tmp: Path, pattern: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, log_of(tmp)):
        assert time.monotonic() < deadline, log_of(tmp)[-3000:]
        time.sleep(0.2)


def test_two_node_job_matches_single_node_torchrun(cluster, reference, tmp_path):
    job = submit(cluster, tmp_path, f"train.iters={ITERS}", "checkpoint.interval=100")
    info = cluster.wait(job)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", \
        log_of(tmp_path)[-3000:] + cluster.diagnose(job)
    assert info["NodeList"] == "node[1-2]" and info["NumNodes"] == "2"
    assert "2 x 2 ranks" in log_of(tmp_path)
    assert _losses(tmp_path / "h.json") == reference  # bit for bit


def test_preemption_checkpoints_requeues_and_resumes_to_the_same_losses(cluster, reference, tmp_path):
    job = submit(cluster, tmp_path, f"train.iters={ITERS}", "checkpoint.interval=100")
    wait_for_line(tmp_path, r"train step 3 ")
    cluster.run("scancel", "--signal=USR1", "--batch", job)  # what --signal=B:USR1@120 sends
    info = cluster.wait(job, states={"PENDING"})
    requeued_at = time.monotonic()
    assert info["Restarts"] == "1" and info["Reason"] == "BeginTime"
    first = _losses(tmp_path / "h.json")
    stop = max(first)
    assert 3 <= stop < ITERS and read_tracker(tmp_path / "ckpt") == stop
    # SLURM releases the job itself after the credential lifetime (cred_expire, local_cluster.sh);
    # `scontrol update StartTime=now` would race the nodes' revocation of the job's old credential.
    info = cluster.wait(job)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", \
        log_of(tmp_path)[-3000:] + cluster.diagnose(job)
    second = _losses(tmp_path / "h.json")
    assert min(second) == stop + 1 and {**first, **second} == reference  # bit for bit
    log = log_of(tmp_path)
    assert re.search(rf"exit 42: preempted: SIGUSR1 .* saved iter_{stop:07d}", log)
    assert f"requeueing job {job}" in log and f"resuming at step {stop}" in log  # both parts in one log
    assert log.index("restart 0") < log.index("exit 42") < log.index("restart 1")
    print(f"requeued job back to COMPLETED {time.monotonic() - requeued_at:.0f} s after the requeue")


def test_a_lost_node_ends_the_job_and_a_resubmission_resumes(cluster, reference, tmp_path):
    job = submit(cluster, tmp_path, "train.iters=200", "checkpoint.interval=2")
    wait_for_line(tmp_path, r"saved checkpoint .*iter_0000004")
    local_cluster("kill-node", str(cluster.root), "node2")  # its slurmd and every process of the job there
    lost = time.monotonic()
    info = cluster.wait(job, states={"FAILED", "COMPLETING"}, timeout=120)
    ended = time.monotonic() - lost
    assert ended < HEARTBEAT_TIMEOUT_S + 25, ended  # the watchdog's timeout + srun's 10 s grace + polling
    info = cluster.wait(job, timeout=120)
    assert info["ExitCode"] == f"{EXIT_PEER_FAILURE}:0", log_of(tmp_path)[-3000:] + cluster.diagnose(job)
    log = log_of(tmp_path)
    assert re.search(r"stops the job: rank [23] \(host node2, pid \d+\) is dead or frozen", log), log[-3000:]
    tracker = read_tracker(tmp_path / "ckpt")
    assert tracker >= 4 and incomplete_reason(step_dir(tmp_path / "ckpt", tracker)) is None
    assert all(incomplete_reason(step_dir(tmp_path / "ckpt", s)) is None for s in list_steps(tmp_path / "ckpt")
               if s <= tracker)
    local_cluster("start-node", str(cluster.root), "node2")  # the node replaced
    again = tmp_path / "again"
    again.mkdir()
    (again / "ckpt").symlink_to(tmp_path / "ckpt")
    job = submit(cluster, again, f"train.iters={ITERS}", "checkpoint.interval=100")
    info = cluster.wait(job)
    assert info["JobState"] == "COMPLETED", log_of(again)[-3000:] + cluster.diagnose(job)
    resumed = _losses(again / "h.json")
    assert min(resumed) == tracker + 1 and resumed == {s: reference[s] for s in resumed}
    print(f"lost node: job ended {ended:.1f} s after the kill; resumed from step {tracker}")

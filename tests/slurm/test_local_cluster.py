"""local_cluster.sh itself: a second cluster runs beside the shared one, `down` leaves no process,
namespace, network link or mount behind, ended jobs keep their state and exit code, bad input is
one clear line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.slurm.conftest import Cluster, local_cluster


def _net_namespaces(pids: list[int]) -> set[str]:
    out = set()
    for pid in pids:
        try:
            out.add(os.readlink(f"/proc/{pid}/ns/net"))
        except OSError:
            pass
    return out


def _processes_in(namespaces: set[str]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "net") in namespaces:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _links() -> str:
    return "".join(sorted(p.name + "\n" for p in Path("/sys/class/net").iterdir()))


def test_a_second_cluster_runs_beside_and_down_leaves_nothing(cluster, tmp_path):
    root = Path("/tmp") / f"megacode-slurm-second-{os.getpid()}"
    links, mounts = _links(), Path("/proc/self/mountinfo").read_text()
    try:
        out = local_cluster("up", str(root), "--nodes", "1", "--cpus", "2").stdout
        assert f"export SLURM_CONF={root}/slurm.conf" in out
        second = Cluster(root)
        job = second.sbatch("--wrap", "hostname; grep node1 /etc/hosts", "-o", str(tmp_path / "out.txt"))
        assert second.wait(job)["JobState"] == "COMPLETED"
        assert (tmp_path / "out.txt").read_text().splitlines() == ["node1", "10.213.0.11 node1"]
        assert cluster.run("sinfo", "-h", "-o", "%D %T").stdout.split() == ["2", "idle"]  # the shared one: untouched
        pids = [int(p.read_text()) for p in (root / "pids").iterdir()]
        namespaces = _net_namespaces(pids) - {os.readlink("/proc/self/ns/net")}  # munged runs in ours
        assert len(namespaces) == 2  # ctl (bridge, slurmctld) and node1
    finally:
        local_cluster("down", str(root), check=False)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), pid
    assert _processes_in(namespaces) == []
    assert _links() == links  # no bridge or veth ever lived in this machine's namespace
    assert Path("/proc/self/mountinfo").read_text() == mounts and str(root) not in mounts
    assert local_cluster("down", str(root)).returncode == 0  # idempotent
    local_cluster("down", str(root / "never-up"))
    shutil.rmtree(root)


def test_ended_jobs_keep_state_and_exit_code(cluster, tmp_path):
    job = cluster.sbatch("--wrap", "exit 3", "-o", str(tmp_path / "out.txt"))
    info = cluster.wait(job)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "3:0"
    lines = [line for line in (cluster.root / "jobcomp.txt").read_text().splitlines() if f"JobId={job} " in line]
    assert len(lines) == 1 and "JobState=FAILED" in lines[0] and "ExitCode=3:0" in lines[0]


def test_bad_input_and_a_second_up_in_the_same_dir(cluster):
    again = local_cluster("up", str(cluster.root), check=False)
    assert again.returncode != 0 and f"a cluster already runs in {cluster.root}" in again.stderr
    bad = local_cluster("up", "/tmp/megacode-slurm-bad", "--nodes", "0", check=False)
    shutil.rmtree("/tmp/megacode-slurm-bad", ignore_errors=True)
    assert bad.returncode != 0 and "--nodes must be 1-99, got '0'" in bad.stderr

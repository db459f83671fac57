"""A bad config fails with one clear line and a non-zero exit, not a traceback from every rank."""

import os
import subprocess

from tests.training.launch import REPO, TINY_CONFIG, torchrun


def test_launch_script_reports_one_line(tmp_path):
    env = {**os.environ, "NPROC_PER_NODE": "4", "PYTHON": str(REPO / ".venv" / "bin" / "python")
           if (REPO / ".venv").exists() else "python"}
    proc = subprocess.run(["bash", "launch/torchrun.sh", str(TINY_CONFIG), "parallel.tp=4", "parallel.pp=1",
                           f"checkpoint.dir={tmp_path}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["megacode: config error: model tiny: 2 KV groups not divisible by parallel.tp=4"], proc.stderr
    assert not (tmp_path / "latest_checkpointed_iteration.txt").exists()


def test_four_ranks_print_one_error_and_no_rank_tracebacks():
    proc = torchrun(4, ["-m", "megacode.train", "--config", str(TINY_CONFIG), "train.global_batch_tokens=100"],
                    check=False, timeout=120)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert output.count("megacode: config error:") == 1, output
    assert "train.global_batch_tokens=100 is not a multiple of data.seq_length=64" in output
    assert "]: Traceback" not in output  # no rank raised


def test_schedule_error_is_caught_before_launch(tmp_path):
    """The warm-up/decay check spans two sections: it runs with the layout checks, before torchrun."""
    env = {**os.environ, "NPROC_PER_NODE": "4", "PYTHON": str(REPO / ".venv" / "bin" / "python")
           if (REPO / ".venv").exists() else "python"}
    proc = subprocess.run(["bash", "launch/torchrun.sh", str(TINY_CONFIG), "train.iters=4",
                           f"checkpoint.dir={tmp_path}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["megacode: config error: schedule.warmup_iters=5 must be below the decay length "
                     "(schedule.decay_iters or train.iters) = 4"], proc.stderr


def test_checkpoint_load_without_a_checkpoint_is_one_line_before_launch(tmp_path):
    """A first run pointed at an empty checkpoint.load (and one whose only save died): exit 2 from
    --check-only, naming the directory and what it lacks; checkpoint.dir may be empty."""
    def check(*overrides):
        env = {**os.environ, "WORLD_SIZE": "4"}
        return subprocess.run([os.sys.executable, "-m", "megacode.train", "--config", str(TINY_CONFIG), "--check-only",
                               "logging.dir=null", *overrides], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120)

    empty = tmp_path / "empty"
    empty.mkdir()
    done = check(f"checkpoint.load={empty}", f"checkpoint.dir={tmp_path / 'out'}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"megacode: config error: checkpoint.load={empty} holds no checkpoint: no latest_checkpointed_iteration.txt "
        f"and no iter_* directory (to start fresh and resume once a checkpoint exists, set checkpoint.dir instead)"]
    (empty / "iter_0000005").mkdir()
    done = check(f"checkpoint.load={empty}")
    assert done.returncode == 2 and "no complete iter_* directory (1 incomplete; newest iter_0000005: " in done.stderr
    assert f"{empty / 'iter_0000005' / 'metadata.json'} is missing" in done.stderr
    done = check(f"checkpoint.load={tmp_path / 'nowhere'}")
    assert done.returncode == 2 and f"checkpoint.load={tmp_path / 'nowhere'} does not exist" in done.stderr
    assert check(f"checkpoint.dir={empty}").returncode == 0  # resume-if-present: a fresh start

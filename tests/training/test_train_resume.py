"""End-to-end training on 4 gloo ranks: loss falls, kill + resume is bit-exact, resharded resume
agrees, TensorBoard gets the metrics."""

import signal

import pytest

from tests.training.launch import train

SHAPE = ["data.seq_length=32", "train.global_batch_tokens=512", "train.micro_batch_size=2",
         "schedule.warmup_iters=2", "train.eval_interval=0", "logging.interval=1"]


def test_fifty_steps_lower_the_loss(tmp_path):
    steps, _ = train(1, SHAPE + ["parallel.tp=1", "parallel.pp=1", "train.iters=50", "optim.lr=1e-2",
                                 "checkpoint.dir=null", "logging.dir=null"], tmp_path, "fifty")
    losses = [s["loss"] for s in steps]
    assert len(losses) == 50
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 20-step TP2PP2 run, and one SIGKILLed after step 10 then resumed."""
    tmp = tmp_path_factory.mktemp("resume")
    common = SHAPE + ["train.iters=20", "checkpoint.interval=10"]
    full, _ = train(4, common + [f"checkpoint.dir={tmp / 'full'}", f"logging.dir={tmp / 'tb'}"], tmp, "full")
    _, killed = train(4, common + [f"checkpoint.dir={tmp / 'killed'}", "logging.dir=null"], tmp, "killed",
                      env={"MEGACODE_TEST_KILL_AFTER_STEP": "12"}, check=False)
    killed.latest_after_kill = (tmp / "killed" / "latest_checkpointed_iteration.txt").read_text().strip()
    resumed, _ = train(4, common + [f"checkpoint.dir={tmp / 'killed'}", "logging.dir=null"], tmp, "resumed")
    return tmp, full, killed, resumed


def test_killed_run_resumes_bit_for_bit(runs):
    tmp, full, killed, resumed = runs
    assert killed.returncode != 0 and str(signal.SIGKILL.value) in killed.stderr + killed.stdout
    assert killed.latest_after_kill == "10"
    assert [s["step"] for s in resumed] == list(range(11, 21))
    by_step = {s["step"]: s for s in full}
    for step in resumed:
        assert step["loss"] == by_step[step["step"]]["loss"], step  # exact, not approximate
        assert step["grad_norm"] == by_step[step["step"]]["grad_norm"], step
    assert full[-1]["loss"] < full[0]["loss"]


def test_checkpoint_at_tp2pp2_resumes_at_tp1pp1(runs, tmp_path):
    tmp, full, _, _ = runs
    steps, _ = train(1, SHAPE + ["parallel.tp=1", "parallel.pp=1", "train.iters=11", "checkpoint.interval=0",
                                 f"checkpoint.load={tmp / 'full'}", "checkpoint.load_step=10",
                                 f"checkpoint.dir={tmp_path / 'tp1'}", "logging.dir=null"], tmp_path, "tp1")
    assert [s["step"] for s in steps] == [11]
    assert steps[0]["loss"] == pytest.approx(full[10]["loss"], rel=1e-5)
    assert steps[0]["grad_norm"] == pytest.approx(full[10]["grad_norm"], rel=1e-5)
    # Resumed state, not a fresh start: LR continues the schedule, step-1 loss would be ~6.2.
    assert steps[0]["lr"] == pytest.approx(full[10]["lr"], rel=1e-9)


def test_tensorboard_has_training_metrics(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp = runs[0]
    events = EventAccumulator(str(tmp / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("loss", "lr", "grad_norm", "tokens_per_s_per_gpu", "tflops_per_gpu", "mem_rss_gib"):
        assert f"train/{tag}" in tags, tags
    losses = [e.value for e in events.Scalars("train/loss")]
    assert len(losses) == 20 and losses[-1] < losses[0]


@pytest.fixture(scope="module")
def async_runs(runs):
    """The same 20 steps with asynchronous saves every 5 steps: a run that stops after step 13
    (it saves there on its way out), then its resumption to step 20 keeping the last two."""
    from megacode.checkpoint.tracker import incomplete_reason, list_steps, read_tracker, step_dir

    tmp = runs[0]
    ckpt = tmp / "async"
    common = SHAPE + ["train.iters=20", "checkpoint.interval=5", "checkpoint.async_save=true",
                      f"checkpoint.dir={ckpt}", "logging.dir=null"]
    first, first_proc = train(4, common + ["train.exit_interval=13"], tmp, "async_first")

    def state():
        return {"tracker": read_tracker(ckpt), "steps": list_steps(ckpt),
                "incomplete": {s: incomplete_reason(step_dir(ckpt, s)) for s in list_steps(ckpt)}}

    after_first = state()
    second, _ = train(4, common + ["checkpoint.keep_last=2"], tmp, "async_second")
    return first, first_proc, after_first, second, state()


def test_async_saves_resume_bit_for_bit_like_blocking_ones(runs, async_runs):
    full = {s["step"]: s for s in runs[1]}
    first, first_proc, _, second, _ = async_runs
    assert [s["step"] for s in first] == list(range(1, 14))
    assert [s["step"] for s in second] == list(range(14, 21))
    for step in first + second:  # exact: saving in the background changes nothing the run computes
        assert (step["loss"], step["grad_norm"]) == (full[step["step"]]["loss"], full[step["step"]]["grad_norm"]), step
    assert "the shards are written in the background" in first_proc.stdout + first_proc.stderr


def test_async_save_on_the_way_out_is_complete_and_tracked_before_exit(async_runs):
    _, _, after_first, _, after_second = async_runs
    # the run stopped after step 13: the saves at 5 and 10, and the one it began at 13, all finished
    assert after_first == {"tracker": 13, "steps": [5, 10, 13], "incomplete": {5: None, 10: None, 13: None}}
    # retention ran only after each save completed: the last two complete ones are left
    assert after_second == {"tracker": 20, "steps": [15, 20], "incomplete": {15: None, 20: None}}

"""Host synchronizations per training step, counted in real runs of `megacode.train`
(tests/training/host_syncs.py says what counts): at most one per step outside logging steps, on
every rank, at 1 rank and at TP2 x PP2, and while an asynchronous checkpoint is being written;
and the seams that removed Megatron-Core's own host reads
(per-token gradient scaling, the gradient norm) train bit for bit like Megatron's originals."""

import json
import threading

import pytest
import torch

from tests.training.host_syncs import HostSyncCounter
from tests.training.launch import TINY_CONFIG, torchrun

LOG_EVERY = 2
STEPS = 5
SHAPE = ["data.seq_length=32", "train.global_batch_tokens=512", "train.micro_batch_size=2",
         "schedule.warmup_iters=2", "train.eval_interval=0", "checkpoint.dir=null", "optim.lr=1e-2",
         f"train.iters={STEPS}", f"logging.interval={LOG_EVERY}"]
TP2PP2 = ["parallel.tp=2", "parallel.pp=2"]


def _count(nproc: int, overrides: list, tmp, name: str, reference: bool = False, env: dict | None = None):
    """(rank 0's step history, {rank: {step: events}})."""
    prefix, history = tmp / name, tmp / f"{name}_history.json"
    torchrun(nproc, ["tests/training/scripts/count_host_syncs.py", str(prefix)]
             + (["--megatron-reference"] if reference else [])
             + ["--config", str(TINY_CONFIG), "--history-json", str(history)] + SHAPE + overrides, env=env)
    counts = {rank: {int(step): events for step, events in
                     json.loads((tmp / f"{name}.{rank}.json").read_text())["steps"].items()}
              for rank in range(nproc)}
    return json.loads(history.read_text()), counts


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("syncs")
    one = _count(1, ["parallel.tp=1", "parallel.pp=1", f"logging.dir={tmp / 'tb'}"], tmp, "one")
    four = _count(4, TP2PP2 + ["logging.dir=null"], tmp, "four")
    reference = _count(4, TP2PP2 + ["logging.dir=null"], tmp, "reference", reference=True)
    return {"one": one, "four": four, "reference": reference}


ASYNC_STEPS, SAVE_AT = 7, 3


@pytest.fixture(scope="module")
def async_run(tmp_path_factory):
    """TP2 x PP2 saving asynchronously at step 3 (and at the end), each writer held 5 s
    (MEGACODE_TEST_SLOW_WRITE) so the save is in flight during steps 4 and 5; no logging steps."""
    tmp = tmp_path_factory.mktemp("syncs_async")
    return _count(4, TP2PP2 + ["logging.dir=null", "logging.interval=100", f"checkpoint.dir={tmp / 'ckpt'}",
                               f"checkpoint.interval={SAVE_AT}", "checkpoint.async_save=true",
                               f"train.iters={ASYNC_STEPS}"], tmp, "async", env={"MEGACODE_TEST_SLOW_WRITE": "5"})


def _device_syncs(events: list) -> list:
    return [e for e in events if not e[2]]


@pytest.mark.parametrize("name", ["one", "four"])
def test_at_most_one_host_sync_per_step_outside_logging_steps(runs, name):
    history, counts = runs[name]
    assert [s["step"] for s in history] == list(range(1, STEPS + 1))
    for rank, steps in counts.items():
        assert sorted(steps) == list(range(1, STEPS + 1)), (rank, sorted(steps))
        for step, events in steps.items():
            if step % LOG_EVERY == 0:
                continue
            syncs = _device_syncs(events)
            assert len(syncs) <= 1, f"rank {rank} step {step}: {len(syncs)} host syncs:\n" + \
                "\n".join(f"  {kind} at {where}" for kind, where, _ in syncs)
    # The counter sees reads deep inside libraries: torch's Adam reads its host step counters.
    assert any(e[2].startswith("torch.optim") for e in counts[0][1]), counts[0][1]


def test_a_save_in_flight_adds_no_host_sync(async_run):
    history, counts = async_run
    by_step = {s["step"]: s for s in history}
    assert sorted(by_step) == list(range(1, ASYNC_STEPS + 1))
    in_flight = [SAVE_AT + 1, SAVE_AT + 2]
    # The step statistics counted the writers of the step-3 save still running on every rank...
    assert [by_step[s]["writers_running"] for s in in_flight] == [4, 4], history
    assert by_step[1]["writers_running"] == 0
    for rank, steps in counts.items():
        for step in [1, 2] + in_flight:  # ...and deciding so cost no collective or read of its own
            syncs = _device_syncs(steps[step])
            assert [where.split(":")[0] for _, where, _ in syncs] == ["megacode/training/step_stats.py"], \
                (rank, step, syncs)


def test_the_one_sync_carries_the_step_statistics(runs):
    _, counts = runs["four"]
    for rank, steps in counts.items():
        syncs = _device_syncs(steps[1])
        assert [where.split(":")[0] for _, where, _ in syncs] == ["megacode/training/step_stats.py"], (rank, syncs)


def test_megatron_reference_counts_more_syncs_and_trains_identically(runs):
    history, counts = runs["four"]
    ref_history, ref_counts = runs["reference"]
    key = [(s["step"], s["loss"], s["grad_norm"], s["lr"]) for s in history]
    assert key == [(s["step"], s["loss"], s["grad_norm"], s["lr"]) for s in ref_history]  # bit for bit
    assert key[-1][1] < key[0][1]
    # Megatron's `if num_tokens > 0` and `total_norm.item()` are back: the seams removed them.
    extra = [where for _, where, _ in _device_syncs(ref_counts[0][1])]
    assert any("finalize_model_grads" in w for w in extra) and any("clip_grads.py" in w for w in extra), extra


def test_counter_counts_reads_on_its_own_thread_only():
    t = torch.arange(4.0)
    with HostSyncCounter() as counter:
        t.sum().item()
        t.tolist()
        if t[1] > 0:
            float(t[2])
        worker = threading.Thread(target=lambda: t.max().item())
        worker.start()
        worker.join()
    assert [kind for kind, _, _ in counter.events] == ["scalar read", "Tensor.tolist", "scalar read", "scalar read"]
    t.sum().item()  # restored on exit
    assert len(counter.events) == 4

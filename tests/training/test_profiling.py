"""`logging.profile`: a training run writes a torch.profiler trace of the configured steps on the
listed ranks only (the test opens it); the CUDA memory snapshot path, with torch.cuda.memory's
functions stood in for, and a CPU run that never touches them."""

import json

import pytest
import torch

from megacode.config import ConfigError, load_config, resolve_layout
from megacode.config.schema import LoggingConfig, ProfileConfig
from megacode.training.profiling import StepProfiler
from tests.training.launch import TINY_CONFIG, train

SHAPE = ["data.seq_length=32", "train.global_batch_tokens=512", "train.micro_batch_size=2", "schedule.warmup_iters=1",
         "train.eval_interval=0", "checkpoint.dir=null", "logging.dir=null", "train.iters=4"]


def _steps_in(trace: dict) -> dict:
    """{step: (start µs, end µs)} of the ProfilerStep#N ranges."""
    return {int(e["name"].split("#")[1]): (e["ts"], e["ts"] + e["dur"])
            for e in trace["traceEvents"] if e.get("ph") == "X" and e.get("name", "").startswith("ProfilerStep#")}


def test_training_writes_a_trace_of_the_configured_steps_on_the_listed_ranks(tmp_path):
    out = tmp_path / "profile"
    steps, proc = train(2, SHAPE + ["parallel.tp=1", "parallel.pp=1",
                                    f"logging.profile={{start_step: 2, end_step: 3, ranks: [1], dir: {out}}}"],
                        tmp_path, "profiled")
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    assert sorted(p.name for p in out.iterdir()) == ["rank1_steps2-3.pt.trace.json"]  # rank 0 not listed
    trace = json.loads((out / "rank1_steps2-3.pt.trace.json").read_text())
    ranges = _steps_in(trace)
    assert sorted(ranges) == [2, 3]
    # The steps' real work is inside them: the backward of a linear layer, Adam's update.
    ops = [(e["name"], e["ts"]) for e in trace["traceEvents"] if e.get("ph") == "X" and e.get("cat") == "cpu_op"]
    for step, (begin, end) in ranges.items():
        names = {name for name, ts in ops if begin <= ts <= end}
        adam = any("adam" in n.lower() or "addcdiv" in n for n in names)
        assert "aten::mm" in names and adam, (step, sorted(names)[:40])
    assert "profile of steps 2-3 written" in proc.stdout + proc.stderr


def test_cuda_path_dumps_a_memory_snapshot(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda.memory, "_record_memory_history", lambda **kw: calls.append(("record", kw)))
    monkeypatch.setattr(torch.cuda.memory, "_dump_snapshot", lambda path: (calls.append(("dump", path)),
                                                                          open(path, "wb").close()))
    profiler = StepProfiler(1, 2, tmp_path, rank=3, on_cuda=True)
    for step in (1, 2, 3):
        with profiler.step(step):
            torch.ones(64, 64).matmul(torch.ones(64, 64))
    assert [c[0] for c in calls] == ["record", "dump", "record"]
    assert calls[0][1]["max_entries"] > 0 and calls[2][1] == {"enabled": None}
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["rank3_steps1-2.memory.pickle", "rank3_steps1-2.pt.trace.json"]
    assert sorted(_steps_in(json.loads((tmp_path / "rank3_steps1-2.pt.trace.json").read_text()))) == [1, 2]


def test_cpu_path_never_touches_cuda(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("torch.cuda called on the CPU path")

    for name in ("_record_memory_history", "_dump_snapshot"):
        monkeypatch.setattr(torch.cuda.memory, name, forbidden)
    cfg = LoggingConfig(dir=str(tmp_path), profile=ProfileConfig(start_step=1))
    profiler = StepProfiler.from_config(cfg, rank=0, device=torch.device("cpu"))
    with profiler.step(1):
        torch.ones(4).sum()
    assert [p.name for p in (tmp_path / "profile").iterdir()] == ["rank0_steps1-1.pt.trace.json"]
    assert StepProfiler.from_config(cfg, rank=1, device=torch.device("cpu")) is None  # not a listed rank


@pytest.mark.parametrize("overrides, words", [
    (["logging.profile.start_step=3", "logging.profile.end_step=2", "logging.dir=x"],
     "end_step must be >= start_step=3, got 2"),
    (["logging.profile.start_step=3", "logging.dir=null"], "needs logging.profile.dir or logging.dir"),
    (["logging.profile={start_step: 1, ranks: [0, 4]}", "logging.dir=x"],
     "ranks=[0, 4] names ranks outside the world of 4"),
])
def test_bad_profile_configs_are_named(overrides, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        resolve_layout(load_config(TINY_CONFIG, overrides), 4)

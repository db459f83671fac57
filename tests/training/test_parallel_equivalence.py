"""Parallel equivalence: one step from one checkpoint gives the same loss and grad norm at every
layout (fp32, relative 1e-5): TP1PP1, TP2PP1 (+ sequence parallel), TP1PP2, TP2PP2, TP1PP2 VP2,
and pure DP with the distributed optimizer."""

import json

import pytest

from tests.training.launch import train, torchrun

LAYOUTS_4 = "2,2,0,0;2,1,0,0;2,1,0,1;1,2,0,0;1,2,2,0;1,1,0,0"


@pytest.fixture(scope="module")
def reference_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("equiv")
    ckpt = tmp / "ckpt"
    # A few steps first, so the weights are not a fresh initialisation.
    train(1, ["parallel.tp=1", "parallel.pp=1", "train.iters=3", "schedule.warmup_iters=1",
              "data.seq_length=32", "data.vocab_size=500", "train.global_batch_tokens=512", "train.micro_batch_size=2",
              f"checkpoint.dir={ckpt}", "checkpoint.interval=0", "logging.dir=null"], tmp, "reference")
    return tmp, ckpt


def _run_worker(nproc, ckpt, out, layouts):
    torchrun(nproc, ["tests/training/equivalence_worker.py", str(ckpt), str(out), layouts])
    return json.loads(out.read_text())


def test_loss_and_grad_norm_agree_across_layouts(reference_checkpoint):
    tmp, ckpt = reference_checkpoint
    single = _run_worker(1, ckpt, tmp / "single.json", "1,1,0,0")[0]
    multi = _run_worker(4, ckpt, tmp / "multi.json", LAYOUTS_4)
    assert {r["dp"] for r in multi} == {1, 2, 4}  # DP 2 and 4 exercise the distributed optimizer
    for result in multi:
        assert result["loss"] == pytest.approx(single["loss"], rel=1e-5), result
        assert result["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-5), result
    # The step is a real one: a trained tiny model is far from both zero and uniform loss.
    assert 0.5 < single["loss"] < 6.3 and single["grad_norm"] > 0

"""Bad numerics: planted NaN/Inf/spike losses, handled by skip, rollback or stop.

Runs on a real (tiny) indexed corpus, so bad-step records name documents, at DP2 with the
distributed optimizer: the NaN is planted on DP rank 0 only and reaches the other rank through
the gradient reduce-scatter. What "skip" must equal is defined without the skip machinery: an
unpoisoned run on the same data stream with the poisoned global batches cut out. The rollback
run saves asynchronously (a bad step first completes a save still being written, then rolls
back to the latest).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from megacode.resilience.exit_codes import read_status
from tests.faults.common import argv, drop_batches, read_history, tracker_step, watch_step

LAYOUT = "dp2"
STEPS = 14
NAN_STEP, SPIKE_STEP = 6, 11
SPIKE = ["fault.loss_spike_factor=3", "fault.spike_window=3"]


def corpus(workdir: Path) -> str:
    """200 documents of 20-80 token ids below the tiny vocabulary (512)."""
    from megacode.data.indexed import IndexedDatasetWriter

    prefix = workdir / "corpus" / "docs"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    lengths = rng.integers(20, 80, 200)
    with IndexedDatasetWriter(str(prefix), np.uint16) as writer:
        writer.add_documents(rng.integers(0, 500, int(lengths.sum())), lengths)
    return str(prefix)


def _steps(path: Path) -> list:
    return [(s["step"], s["loss"], s["grad_norm"], s["skipped"], s.get("problems", [])) for s in read_history(path)]


def _records(ckpt: Path) -> list[dict]:
    path = ckpt / "bad_steps.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run(launcher, refs, workdir: Path, rng: random.Random, repeat: int) -> dict:
    data = [f"data.paths=[{{path: {corpus(workdir)}, weight: 1.0}}]", "data.split=100,0",
            f"data.cache_dir={workdir / 'corpus' / 'cache'}"]
    out: dict = {}

    def attempt(name: str, *overrides: str, env=None, target=None) -> dict:
        history = workdir / f"numerics_{name}.json"
        ckpt = workdir / f"numerics_{name}_ckpt"
        started = launcher.start(argv(LAYOUT, history, f"checkpoint.dir={ckpt}", *data, *overrides),
                                 env=env, target=target, name=f"_{name}")
        codes = started.wait(300)
        return {"codes": codes, "steps": _steps(history), "records": _records(ckpt),
                "status": read_status(ckpt / "exit_status.txt"), "tracker": tracker_step(ckpt),
                "log": started.log(0)[-4000:]}

    poison = {"MEGACODE_TEST_POISON": f"nan:{NAN_STEP};spike:{SPIKE_STEP}"}
    # The definition of a skip: an unpoisoned run with both batches cut out of the data stream.
    # Same train.iters everywhere: the packed dataset's sample order depends on its length.
    out["cut"] = attempt("cut", f"train.iters={STEPS}", f"train.exit_interval={STEPS - 2}", "checkpoint.interval=0",
                         "checkpoint.save_at_end=false",
                         *SPIKE, target=drop_batches([NAN_STEP, SPIKE_STEP]))
    watch_dir = workdir / "numerics_watch"
    watch_dir.mkdir(parents=True, exist_ok=True)
    out["skip"] = attempt("skip", f"train.iters={STEPS}", "checkpoint.interval=0", "fault.on_bad_step=skip",
                          *SPIKE, env=poison, target=watch_step(NAN_STEP, watch_dir))
    out["skip"]["watch"] = [json.loads(p.read_text()) for p in sorted(watch_dir.glob("watch_rank*.json"))]
    out["rollback"] = attempt("rollback", f"train.iters={STEPS}", "checkpoint.interval=4",
                              "fault.on_bad_step=rollback", "checkpoint.async_save=true", *SPIKE, env=poison)
    out["stop"] = attempt("stop", "train.iters=1000", "checkpoint.interval=4", "fault.on_bad_step=skip",
                          "fault.max_bad_in_row=3",
                          env={"MEGACODE_TEST_POISON": f"nan:{NAN_STEP},{NAN_STEP + 2};inf:{NAN_STEP + 1}"})
    out["unpoisoned"] = [(s["step"], s["loss"], s["grad_norm"]) for s in
                         refs.get(LAYOUT, STEPS, *data, key="dp2-corpus")]
    out["config"] = {"nan_step": NAN_STEP, "spike_step": SPIKE_STEP, "steps": STEPS, "global_batch": 16}
    return out

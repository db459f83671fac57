"""Preemption scenarios: SIGTERM at seeded random points of many consecutive runs, each run
resuming from the checkpoint the previous one saved on its way out; and the time budget.

Each attempt is a fresh set of rank processes (forked). The driver waits until training is under
way, picks where to strike — inside a step, inside a save, at the end of a step, or after a random
delay — signals one rank or all of them (sometimes their whole process group, as launchers do,
sometimes twice), and waits for every rank to exit. What the ranks printed on receipt says
where each signal really landed. Every other run saves asynchronously (checkpoint.async_save):
its save-and-exit first waits for the save still being written, then saves, then waits again.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from megacode.checkpoint.tracker import incomplete_reason, step_dir
from megacode.resilience.exit_codes import read_status
from tests.faults.common import LAYOUTS, argv, read_history, signal_receipts, tracker_step

SAVE_INTERVAL = 3
WHERE = ("step", "save", "late", "random")


STEP_LINE = r"train step (\d+) \|"  # rank 0 logs it when a step has finished, before any save


def _step_end(attempt, start: int, saving: bool) -> int:
    """Offset in rank 0's log after the next finished step that is (or is not) followed by a save."""
    while True:
        match, start = attempt.wait_log(0, STEP_LINE, start)
        if (int(match[1]) % SAVE_INTERVAL == 0) == saving:
            return start


def _strike(attempt, rng: random.Random, nproc: int, kind: str, start: int) -> dict:
    ranks = rng.choice([[r] for r in range(nproc)] + [list(range(nproc))])
    if kind == "save":  # a save starts right after the step line and takes well over 0.15 s
        _step_end(attempt, start, saving=True)
        time.sleep(rng.uniform(0.0, 0.15))
    elif kind == "step":  # into the next step's forward/backward
        _step_end(attempt, start, saving=False)
        time.sleep(rng.uniform(0.01, 0.06))
    elif kind == "late":  # as a step ends: logging, the stop check, the next step's start
        _step_end(attempt, start, saving=False)
    else:
        time.sleep(rng.uniform(0.0, 1.5))
    group = rng.random() < 0.3
    twice = rng.random() < 0.4
    for rank in ranks:
        attempt.signal(rank, signal.SIGTERM, group=group)
    if twice:  # a second signal while the ranks finish the step and save
        time.sleep(rng.uniform(0.0, 0.3))
        for rank in ranks:
            attempt.signal(rank, signal.SIGTERM, group=group)
    return {"kind": kind, "ranks": ranks, "group": group, "twice": twice}


def chain(launcher, workdir: Path, rng: random.Random, layout: str, signals: int) -> dict:
    """`signals` consecutive preempted runs sharing one checkpoint directory."""
    nproc = LAYOUTS[layout][0]
    ckpt = workdir / f"preempt_{layout}"
    segments = []
    for i in range(signals):
        history = workdir / f"preempt_{layout}_{i}.json"
        before = tracker_step(ckpt) or 0
        async_save = i % 2 == 1
        attempt = launcher.start(argv(layout, history, f"checkpoint.dir={ckpt}",
                                      f"checkpoint.interval={SAVE_INTERVAL}", "train.iters=1000",
                                      f"checkpoint.async_save={str(async_save).lower()}"),
                                 nproc=nproc, name=f"_preempt_{layout}")
        _, started = attempt.wait_log(0, STEP_LINE)  # training is under way
        plan = _strike(attempt, rng, nproc, WHERE[i % len(WHERE)] if i < len(WHERE) else rng.choice(WHERE),
                       started)
        codes = attempt.wait(180)
        after = tracker_step(ckpt)
        logs = "".join(attempt.log(r) for r in range(nproc))
        segments.append({
            "plan": plan, "async": async_save, "codes": codes, "status": read_status(ckpt / "exit_status.txt"),
            "tracker_before": before, "tracker_after": after,
            "incomplete": incomplete_reason(step_dir(ckpt, after)) if after is not None else "no tracker",
            "steps": [(s["step"], s["loss"], s["grad_norm"]) for s in read_history(history)],
            "receipts": signal_receipts(logs), "log_tail": attempt.log(0)[-2500:],
        })
    return {"layout": layout, "segments": segments}


def time_budget(launcher, workdir: Path, layout: str) -> dict:
    """A time budget already spent at start-up: the run stops after its first step, saved."""
    ckpt = workdir / "budget"
    history = workdir / "budget.json"
    attempt = launcher.start(argv(layout, history, f"checkpoint.dir={ckpt}", "train.iters=1000",
                                  "train.exit_duration_minutes=0.0001"), nproc=LAYOUTS[layout][0], name="_budget")
    codes = attempt.wait(180)
    return {"codes": codes, "status": read_status(ckpt / "exit_status.txt"), "tracker": tracker_step(ckpt),
            "steps": [s["step"] for s in read_history(history)], "log_tail": attempt.log(0)[-2500:]}


def run(launcher, refs, workdir: Path, rng: random.Random, repeat: int) -> dict:
    result = {"chains": [chain(launcher, workdir, rng, "pp2", 20 * repeat),
                         chain(launcher, workdir, rng, "tp2pp2", 2 * repeat)],
              "budget": time_budget(launcher, workdir, "pp2")}
    for item in result["chains"]:
        last = max((s["tracker_after"] or 0) for s in item["segments"])
        item["reference"] = [(s["step"], s["loss"], s["grad_norm"]) for s in refs.get(item["layout"], last)]
    return result

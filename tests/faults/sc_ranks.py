"""Dead, frozen and hung ranks: the job must stop by itself, within the watchdog's bounds, with a
message naming the rank and what it was doing; a restart resumes from the last checkpoint.

- dead: SIGKILL one rank in the middle of a step (its peers see a broken connection);
- frozen: SIGSTOP one rank (the connection stays open, nothing errors, only heartbeats stop);
- hung: a rank blocks inside a phase while its process and watchdog stay alive (stall check).
The launcher never kills a live rank of these attempts before they end on their own (only the
frozen rank, which cannot exit, once its peers have).
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from megacode.resilience.exit_codes import read_status
from tests.faults.common import argv, read_history, tracker_step

LAYOUT = "pp2"
BOUND_S = 90.0  # detection takes ~3 s (heartbeat timeout); this only keeps a broken run from hanging CI


def _survivor_wait(attempt, survivors: list[int], bound: float) -> tuple[dict, float]:
    start = time.monotonic()
    while time.monotonic() - start < bound:
        codes = attempt.poll()
        if all(r in codes for r in survivors):
            break
        time.sleep(0.02)
    return dict(attempt.poll()), time.monotonic() - start


def dead(launcher, workdir: Path, rng: random.Random) -> dict:
    ckpt = workdir / "dead"
    attempt = launcher.start(argv(LAYOUT, None, f"checkpoint.dir={ckpt}", "checkpoint.interval=3",
                                  "train.iters=1000"), name="_dead")
    victim = rng.randint(0, 1)
    info = attempt.wait_phase(victim, ("forward-backward",), min_step=4)
    time.sleep(rng.uniform(0.0, 0.03))
    attempt.signal(victim, signal.SIGKILL)
    survivors = [r for r in range(2) if r != victim]
    codes, seconds = _survivor_wait(attempt, survivors, BOUND_S)
    codes = {**attempt.wait(0), **{r: c for r, c in codes.items() if r in survivors}}
    tracker = tracker_step(ckpt)
    status = read_status(ckpt / "exit_status.txt")
    history = workdir / "dead_restart.json"
    restart = launcher.start(argv(LAYOUT, history, f"checkpoint.dir={ckpt}", "checkpoint.interval=3",
                                  f"train.iters={(tracker or 0) + 4}"), name="_dead_restart")
    restart_codes = restart.wait(180)
    return {"victim": victim, "victim_seen": info, "codes": codes, "seconds": seconds,
            "survivor_logs": {r: attempt.log(r)[-4000:] for r in survivors},
            "status": status, "tracker": tracker, "restart_codes": restart_codes, "restart_log": restart.log(0)[-3000:],
            "restart": [(s["step"], s["loss"], s["grad_norm"]) for s in read_history(history)]}


def frozen(launcher, workdir: Path, rng: random.Random) -> dict:
    ckpt = workdir / "frozen"
    attempt = launcher.start(argv(LAYOUT, None, f"checkpoint.dir={ckpt}", "train.iters=1000"), name="_frozen")
    victim = rng.randint(0, 1)
    info = attempt.wait_phase(victim, ("forward-backward", "optimizer"), min_step=3)
    attempt.signal(victim, signal.SIGSTOP)
    survivors = [r for r in range(2) if r != victim]
    codes, seconds = _survivor_wait(attempt, survivors, BOUND_S)
    attempt.kill_group(victim)  # a stopped process cannot exit; the scheduler ends it
    codes = {**attempt.wait(10), **{r: c for r, c in codes.items() if r in survivors}}
    return {"victim": victim, "victim_seen": info, "codes": codes, "seconds": seconds,
            "survivor_logs": {r: attempt.log(r)[-4000:] for r in survivors},
            "status": read_status(ckpt / "exit_status.txt")}


def hung(launcher, workdir: Path, rng: random.Random) -> dict:
    ckpt = workdir / "hung"
    victim, step = rng.randint(0, 1), 5
    attempt = launcher.start(argv(LAYOUT, None, f"checkpoint.dir={ckpt}", "train.iters=1000",
                                  "fault.stall_timeout_s=5"),
                             env={"MEGACODE_TEST_HANG": f"{victim}:{step}:optimizer"}, name="_hung")
    codes, seconds = _survivor_wait(attempt, [0, 1], BOUND_S)
    codes = {**attempt.wait(0), **codes}
    return {"victim": victim, "step": step, "codes": codes, "seconds": seconds,
            "logs": {r: attempt.log(r)[-4000:] for r in range(2)},
            "status": read_status(ckpt / "exit_status.txt")}


def run(launcher, refs, workdir: Path, rng: random.Random, repeat: int) -> dict:
    result = {"dead": [dead(launcher, workdir / f"r{i}", rng) for i in range(repeat)],
              "frozen": [frozen(launcher, workdir / f"r{i}", rng) for i in range(repeat)],
              "hung": [hung(launcher, workdir / f"r{i}", rng) for i in range(repeat)]}
    longest = max(max((s[0] for s in d["restart"]), default=0) for d in result["dead"])
    result["reference"] = [(s["step"], s["loss"], s["grad_norm"]) for s in refs.get(LAYOUT, max(longest, 12))]
    return result

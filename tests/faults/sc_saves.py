"""Kills during checkpoint saves, and what the latest pointer says meanwhile.

Each attempt resumes from the shared directory, saves after every step (keeping the last two),
and loses a rank to SIGKILL inside a save: at one of the save's named points (the rank kills
itself there: dist_ckpt.SAVE_POINTS), or from outside while shard files are being written. The
launcher then tears the attempt down, as a job scheduler would. Blocking and asynchronous saves
(checkpoint.async_save) take turns on the same directory: an asynchronous save is also killed
right after its writer started ("scheduled") and, from outside, while its writer is in flight;
its later points run at its finalization, a step or more later. A watcher process reads the
tracker every few milliseconds through every attempt: whenever it names a step, that step's
directory must be a complete checkpoint. A last attempt (asynchronous) runs to the end; its
losses must equal an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

from megacode.checkpoint.dist_ckpt import SAVE_POINTS, resolve_load_dir
from megacode.checkpoint.tracker import incomplete_reason, step_dir
from tests.faults.common import argv, read_history, tracker_step

LAYOUT = "tp2"
POINTS = SAVE_POINTS + ("writing",)  # "writing": SIGKILL from outside while shards appear
# (async_save, point): every point of a blocking save, then every point of an asynchronous one
# whose code differs from the blocking save's ("begin" is the same code in both).
PLAN = ([(False, p) for p in POINTS if p != "scheduled"] + [(True, p) for p in POINTS if p != "begin"])


class TrackerWatch:
    """A forked process that reads the tracker in a loop and records every moment it named an
    incomplete checkpoint (a process, not a thread: the launcher must not fork while threaded)."""

    def __init__(self, ckpt: Path, out: Path):
        self.ckpt, self.out, self.stop_file = ckpt, out, out.with_suffix(".stop")
        self.pid = os.fork()
        if self.pid == 0:
            try:
                self._watch()
            finally:
                os._exit(0)

    def _watch(self) -> None:
        reads, violations = 0, []
        while not self.stop_file.exists():
            try:
                step = tracker_step(self.ckpt)
            except (ValueError, OSError):  # replaced between exists() and read(): read again
                continue
            if step is not None:
                reads += 1
                reason = incomplete_reason(step_dir(self.ckpt, step))
                if reason is not None and tracker_step(self.ckpt) == step:  # still the latest
                    violations.append({"step": step, "reason": reason})
            time.sleep(0.003)
        self.out.write_text(json.dumps({"reads": reads, "violations": violations}))

    def stop(self) -> dict:
        self.stop_file.touch()
        os.waitpid(self.pid, 0)
        return json.loads(self.out.read_text())


def _kill_while_writing(attempt, ckpt: Path, victim: int, after: int, timeout: float = 120.0) -> dict:
    """SIGKILL `victim` as soon as a save past step `after` has shard files but no metadata yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(attempt.poll()) < len(attempt.pids):
        for path in sorted(ckpt.glob("iter_*")):
            if int(path.name[5:]) > after and any(path.glob("*.distcp")) and not (path / ".metadata").exists():
                attempt.signal(victim, signal.SIGKILL)
                return {"dir": path.name, "files": sorted(p.name for p in path.iterdir())}
        time.sleep(0.001)
    attempt.signal(victim, signal.SIGKILL)  # missed the window: kill anyway, the invariant holds still
    return {"dir": None, "files": []}


def run(launcher, refs, workdir: Path, rng: random.Random, repeat: int) -> dict:
    ckpt = workdir / "saves"
    watch = TrackerWatch(ckpt, workdir / "saves_watch.json")
    kills = []
    common = (f"checkpoint.dir={ckpt}", "checkpoint.interval=1", "checkpoint.keep_last=2", "train.iters=1000")
    for k in range(len(PLAN) * repeat):
        resume = resolve_load_dir(ckpt, None)  # where the attempt will start: not always the tracker's
        before = int(resume.name[5:]) if resume is not None else 0
        async_save, point = PLAN[k] if k < len(PLAN) else rng.choice(PLAN)
        ranks = rng.choice(["0", "1", "all"])
        step = before + 1 + rng.randint(0, 1)
        env = {} if point == "writing" else {"MEGACODE_TEST_KILL_IN_SAVE": f"{ranks}:{step}:{point}"}
        attempt = launcher.start(argv(LAYOUT, None, *common, f"checkpoint.async_save={str(async_save).lower()}"),
                                 env=env, name="_saves_async" if async_save else "_saves")
        seen = None
        if point == "writing":
            seen = _kill_while_writing(attempt, ckpt, rng.randint(0, 1), before)
            deadline = time.monotonic() + 30
            while not attempt.poll() and time.monotonic() < deadline:  # a rank inside fsync dies on return
                time.sleep(0.005)
        else:
            deadline = time.monotonic() + 120
            while not attempt.poll() and time.monotonic() < deadline:  # until the first rank dies
                beat = attempt.heartbeat(0)
                if beat and beat["step"] > step + 1:
                    raise RuntimeError(f"attempt {attempt.number}: no kill at step {step} ({point}), now at step "
                                       f"{beat['step']}\n{attempt.log(0)[-2000:]}")
                time.sleep(0.005)
        time.sleep(0.5)  # the job scheduler notices, then tears the rest down
        codes = attempt.wait(0)
        after = tracker_step(ckpt)
        kills.append({"async": async_save, "point": point, "ranks": ranks, "step": step, "codes": codes, "seen": seen,
                      "tracker_before": before, "tracker_after": after,
                      "dirs": sorted(p.name for p in ckpt.glob("iter_*")),
                      "incomplete": incomplete_reason(step_dir(ckpt, after)) if after is not None else "no tracker"})
    final_iters = (tracker_step(ckpt) or 0) + 3
    history = workdir / "saves_final.json"
    attempt = launcher.start(argv(LAYOUT, history, f"checkpoint.dir={ckpt}", "checkpoint.interval=1",
                                  "checkpoint.keep_last=2", f"train.iters={final_iters}", "checkpoint.async_save=true"),
                             name="_saves_final")
    final_codes = attempt.wait(180)
    watched = watch.stop()
    return {"kills": kills, "final_codes": final_codes, "final_log": attempt.log(0)[-3000:],
            "final_tracker": tracker_step(ckpt),
            "final": [(s["step"], s["loss"], s["grad_norm"]) for s in read_history(history)],
            "reference": [(s["step"], s["loss"], s["grad_norm"]) for s in refs.get(LAYOUT, final_iters)],
            "dirs": sorted(p.name for p in ckpt.glob("iter_*")), "tracker_reads": watched["reads"],
            "violations": watched["violations"]}

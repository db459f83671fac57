"""Test-only fault hooks. Each reads one `MEGACODE_TEST_*` environment variable, here and nowhere
else; unset (always, outside tests) every hook is a no-op.

    MEGACODE_TEST_KILL_AFTER_STEP=12        SIGKILL every rank right after step 12 completes
    MEGACODE_TEST_POISON="nan:7,8;spike:12" the loss of step 7 and 8 is NaN, of step 12 ×SPIKE_SCALE
                                            (kinds nan, inf, spike; only micro-batch 0 of DP rank 0,
                                            as one bad sample would; backward spreads it)
    MEGACODE_TEST_HANG="1:6:optimizer"      rank 1 blocks forever on entering phase `optimizer` of
                                            step 6 (its watchdog thread keeps beating)
    MEGACODE_TEST_KILL_AT="1:5:forward-backward:0.05:0"
                                            SIGKILL rank 1 0.05 s after it enters phase
                                            `forward-backward` of step 5, in attempt 0 only
                                            (TORCHELASTIC_RESTART_COUNT; delay, attempt optional)
    MEGACODE_TEST_KILL_IN_SAVE="0:4:written" SIGKILL rank 0 at save point `written` of step 4
                                            (ranks `all` or `0,1`; step `any`; points in
                                            megacode.checkpoint.dist_ckpt.SAVE_POINTS)
    MEGACODE_TEST_SLOW_WRITE=1.5            every background checkpoint writer (checkpoint.async_save)
                                            sleeps 1.5 s before writing: the save stays in flight
                                            for a known number of steps
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable, Optional

KILL_AFTER_STEP_ENV = "MEGACODE_TEST_KILL_AFTER_STEP"
POISON_ENV = "MEGACODE_TEST_POISON"
HANG_ENV = "MEGACODE_TEST_HANG"
KILL_AT_ENV = "MEGACODE_TEST_KILL_AT"
KILL_IN_SAVE_ENV = "MEGACODE_TEST_KILL_IN_SAVE"
SLOW_WRITE_ENV = "MEGACODE_TEST_SLOW_WRITE"
SPIKE_SCALE = 100.0


def _kill_self(what: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"test hook: SIGKILL {what}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def after_step(step: int) -> None:
    kill_after = int(os.environ.get(KILL_AFTER_STEP_ENV, "0"))
    if kill_after and step == kill_after:
        _kill_self(f"after step {step}")


def poison_for(step: int) -> Optional[str]:
    """The poison kind planted at `step`, if any."""
    for part in filter(None, os.environ.get(POISON_ENV, "").split(";")):
        kind, steps = part.split(":")
        if step in {int(s) for s in steps.split(",") if s}:
            if kind not in ("nan", "inf", "spike"):
                raise ValueError(f"{POISON_ENV}: unknown kind {kind!r} (nan, inf, spike)")
            return kind
    return None


def poisoned(forward_step: Callable, kind: str) -> Callable:
    """`forward_step` whose first micro-batch on DP rank 0 gets a NaN, Inf or ×SPIKE_SCALE loss."""
    import torch
    from megatron.core import parallel_state

    calls = {"loss": 0}
    factor = {"nan": float("nan"), "inf": float("inf"), "spike": SPIKE_SCALE}[kind]

    def step(data_iterator, model):
        output, loss_func = forward_step(data_iterator, model)

        def bad_loss(output_tensor):
            loss_sum, num_tokens, report = loss_func(output_tensor)
            calls["loss"] += 1
            if calls["loss"] == 1 and parallel_state.get_data_parallel_rank() == 0:
                loss_sum = loss_sum * factor
                report = {"lm loss": torch.stack([loss_sum.detach(), num_tokens.detach().float()])}
            return loss_sum, num_tokens, report

        return output, bad_loss

    return step


def _matches(spec: str, rank: int, step: int) -> bool:
    ranks, at = spec.split(":")[:2]
    return (ranks == "all" or rank in {int(r) for r in ranks.split(",")}) and (at == "any" or int(at) == step)


def on_phase(rank: int, step: int, phase: str) -> None:
    spec = os.environ.get(KILL_AT_ENV, "")
    if spec and _matches(spec, rank, step) and spec.split(":")[2] == phase:
        fields = spec.split(":")
        attempt = int(fields[4]) if len(fields) > 4 else 0
        if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == attempt:
            delay = float(fields[3]) if len(fields) > 3 else 0.0
            what = f"rank {rank} {delay:g} s into {phase} of step {step}"
            threading.Timer(delay, _kill_self, (what,)).start()  # lands mid-phase, main thread busy
    spec = os.environ.get(HANG_ENV, "")
    if spec and _matches(spec, rank, step) and spec.split(":")[2] == phase:
        sys.stderr.write(f"test hook: rank {rank} hangs at step {step} in {phase}\n")
        sys.stderr.flush()
        while True:
            time.sleep(3600)


def save_point(rank: int, step: int, point: str) -> None:
    spec = os.environ.get(KILL_IN_SAVE_ENV, "")
    if spec and _matches(spec, rank, step) and spec.split(":")[2] == point:
        _kill_self(f"rank {rank} at save point {point!r} of step {step}")


def before_background_write() -> None:
    """Runs first in each forked checkpoint writer (megacode.checkpoint.async_save)."""
    delay = float(os.environ.get(SLOW_WRITE_ENV, "0"))
    if delay > 0:
        time.sleep(delay)

"""Bad numerics: judge the step between gradient reduction and the optimizer update.

Megatron-Core's `optimizer.step()` checks for Inf/NaN only through a loss scaler (fp16); with
bf16 or fp32 there is none, and a NaN gradient norm just makes clipping a no-op before Adam
writes NaN into every weight. Its DDP `check_for_nan_in_grad` raises instead of skipping, and
the rerun state machine lives in Megatron-LM's loop, not in Core. So the step is split along
Megatron's own seams, the same calls `ChainedOptimizer.step()` makes:

    prepare_grads()  →  Σ‖g‖² (megacode.training.optimizer.grad_norm_squared)
                     →  [the step's one host read: loss, norm; judge]
                     →  clip_grad_by_total_norm_fp32()  →  step_with_ready_grads()

A bad step stops before the last two: weights, Adam moments and Adam's step counter stay exactly
as they were, the LR schedule does not advance, and the loop still moves the data position past
the batch. Hence "skip" means: the run equals an unpoisoned run over the same data stream with
that global batch removed. The judgement uses the global loss and norm, which come out of
all-reduces bit-identical on every rank, and a guard state every rank updates the same way (and
loads from the same checkpoint): every rank reaches the same decision without a collective of
its own, so no rank ever updates while another skips.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from megacode.config.schema import FaultConfig


@dataclass
class UpdateOutcome:
    applied: bool
    grad_norm: Optional[float]
    problems: list[str] = field(default_factory=list)
    """Why the step is bad; empty for a good step (or an fp16 loss-scaler skip, Megatron's own)."""


class NumericsGuard:
    """Spike windows, bad-step counters and the data ranges rollbacks dropped; saved in checkpoints
    (`TrainState.extra["numerics"]`) so a resumed run judges exactly as an uninterrupted one."""

    def __init__(self, cfg: FaultConfig):
        self.cfg = cfg
        self.losses: deque = deque(maxlen=cfg.spike_window)
        self.grad_norms: deque = deque(maxlen=cfg.spike_window)
        self.bad_in_row = 0
        self.bad_total = 0
        self.newest_step = 0
        """Highest step judged: steps at or below it are replays after a rollback, which do not
        count as progress for `max_bad_in_row`."""
        self.dropped: list[list[int]] = []
        """[start, end) global sample ranges that rollbacks removed from the data stream."""

    def problems(self, loss: float, grad_norm: Optional[float]) -> list[str]:
        found = []
        if not math.isfinite(loss):
            found.append(f"loss {loss}")
        if grad_norm is not None and not math.isfinite(grad_norm):
            found.append(f"grad norm {grad_norm}")
        if found:
            return found
        cfg = self.cfg
        if cfg.loss_spike_factor and len(self.losses) == self.losses.maxlen:
            mean = sum(self.losses) / len(self.losses)
            if loss > cfg.loss_spike_factor * mean:
                found.append(f"loss spike {loss:.4g} > {cfg.loss_spike_factor:g} x recent mean {mean:.4g}")
        if cfg.grad_norm_spike_factor and grad_norm is not None and len(self.grad_norms) == self.grad_norms.maxlen:
            mean = sum(self.grad_norms) / len(self.grad_norms)
            if grad_norm > cfg.grad_norm_spike_factor * mean:
                found.append(f"grad norm spike {grad_norm:.4g} > {cfg.grad_norm_spike_factor:g} x recent mean {mean:.4g}")
        return found

    def record(self, step: int, loss: float, grad_norm: Optional[float], bad: bool) -> None:
        if bad:
            self.bad_in_row += 1
            self.bad_total += 1
        else:
            self.losses.append(loss)
            if grad_norm is not None:
                self.grad_norms.append(grad_norm)
            if step > self.newest_step:
                self.bad_in_row = 0
        self.newest_step = max(self.newest_step, step)

    def is_dropped(self, consumed: int) -> bool:
        return any(start <= consumed < end for start, end in self.dropped)

    def drop(self, start: int, end: int) -> None:
        if [start, end] not in self.dropped:
            self.dropped.append([start, end])

    def state_dict(self) -> dict:
        return {"losses": list(self.losses), "grad_norms": list(self.grad_norms), "bad_total": self.bad_total,
                "dropped": [list(r) for r in self.dropped]}

    def load_state_dict(self, state: Optional[dict]) -> None:
        """Windows and dropped ranges from a checkpoint. Counters of this process (bad in a row,
        newest step) survive a rollback: they describe what happened, not the model state."""
        if not state:
            return
        self.losses = deque(state.get("losses", []), maxlen=self.cfg.spike_window)
        self.grad_norms = deque(state.get("grad_norms", []), maxlen=self.cfg.spike_window)
        self.bad_total = max(self.bad_total, int(state.get("bad_total", 0)))
        for start, end in state.get("dropped", []):
            self.drop(int(start), int(end))


def _clip(optimizer, grad_norm: float) -> None:
    """Megatron's clipping with the norm already computed (as ChainedOptimizer.step does)."""
    from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32

    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        if getattr(inner, "is_stub_optimizer", False) or inner.config.clip_grad <= 0.0:
            continue
        params = inner.get_parameters()
        if params:
            clip_grad_by_total_norm_fp32(params, max_norm=inner.config.clip_grad, total_norm=grad_norm,
                                         use_decoupled_grad=inner.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8)


def guarded_update(optimizer, guard: NumericsGuard, loss: float, grad_norm: float, step: int) -> UpdateOutcome:
    """All ranks, after `optimizer.prepare_grads()` and the step's read of the global loss and
    gradient norm (megacode.training.step_stats): apply the update unless the step is bad."""
    problems = guard.problems(loss, grad_norm)
    if problems:
        guard.record(step, loss, grad_norm, bad=True)
        return UpdateOutcome(False, grad_norm, problems)
    _clip(optimizer, grad_norm)
    optimizer.step_with_ready_grads()
    guard.record(step, loss, grad_norm, bad=False)
    return UpdateOutcome(True, grad_norm)

"""Everything the host needs from a training step, in one all-reduce and one device-to-host read.

A step's host decisions need the global-batch loss (logging, the numerics guard), the token
count, the gradient norm (clipping, the guard), whether any rank must stop (a preemption
signal, the time budget) and how many ranks' background checkpoint writers still run
(megacode.checkpoint.async_save). Read one by one, each is a point where the host waits for
the device (`.item()`, `.tolist()`), and on a GPU every wait drains the queue of kernels the
host could otherwise run ahead on. Here they travel together:

    [loss_sum, tokens, signalled, Σ(rank+1) signalled, over_time, writing]
        float64, SUM over all ranks
    + Σ‖g‖² (float32, Megatron's own all-reduce over its grad-stats group)  ──> one .tolist()

Only the last pipeline stage holds losses and TP ranks hold copies of them, so TP rank 0 of the
last stage contributes the loss and token sums; summing over the world is then the sum over DP
ranks. The values arrive bit-identical on every rank, so every rank judges the step the same way
without another collective (megacode.resilience.numerics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from megacode.training.step import loss_totals

STOP_FIELDS = 3  # megacode.resilience.preemption.stop_flags
WRITING = 2 + STOP_FIELDS  # index of the writers-still-running count


@dataclass
class StepStats:
    loss: float
    """Σ loss / Σ tokens over the global batch (NaN/Inf when a micro-batch's loss was)."""
    tokens: int
    grad_norm: Optional[float]
    """Pre-clipping global 2-norm; None when none was computed (an fp16 overflow step)."""
    stop: list
    """The stop flags summed over all ranks (megacode.resilience.preemption.decide_stop)."""
    writers_running: int = 0
    """Ranks whose background checkpoint writer was still running (BackgroundSave.writing_here)."""


def local_contribution(losses_reduced: list, device: torch.device) -> torch.Tensor:
    """`[2]` float64 (loss sum, tokens) this rank adds to the world sum: its micro-batches' on TP
    rank 0 of the last pipeline stage, zeros elsewhere."""
    from megatron.core import parallel_state

    totals = loss_totals(losses_reduced, device)
    if parallel_state.get_tensor_model_parallel_rank() != 0:
        totals.zero_()
    return totals


def read_step_stats(losses_reduced: list, norm_squared: Optional[torch.Tensor], stop_flags: Optional[list],
                    device: torch.device, writing: int = 0) -> StepStats:
    """All ranks, after the backward pass: one all-reduce, one host read (the step's only one).
    `writing`: 1 while this rank's background checkpoint writer runs."""
    stats = torch.zeros(WRITING + 1, dtype=torch.float64, device=device)
    stats[:2] = local_contribution(losses_reduced, device)
    for index, flag in enumerate(stop_flags or ()):
        # A fill with a Python scalar is a kernel argument; copying a host tensor in would be a
        # blocking copy (PyTorch synchronizes the stream after a non-pinned host-to-device copy).
        stats[2 + index].fill_(flag)
    if writing:
        stats[WRITING].fill_(writing)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(stats)
    if norm_squared is not None:
        stats = torch.cat([stats, norm_squared.to(torch.float64)])  # float32 → float64 is exact
    values = stats.tolist()  # the host waits here, once
    loss_sum, tokens = values[0], values[1]
    # Megatron's get_grad_norm_fp32: `total_norm.item() ** (1.0 / norm_type)`, the same float op.
    grad_norm = values[WRITING + 1] ** (1.0 / 2.0) if norm_squared is not None else None
    return StepStats(loss=loss_sum / max(tokens, 1.0), tokens=int(tokens), grad_norm=grad_norm,
                     stop=[int(round(v)) for v in values[2:2 + STOP_FIELDS]],
                     writers_running=int(round(values[WRITING])))

"""Micro-batches for one optimizer step, handed to Megatron's schedules.

Sample selection and collation live in `megacode.data.batching` (the loader uses them too);
names are re-exported here for callers of the training side.
"""

from __future__ import annotations

from typing import Iterator

import torch

from megacode.config import Layout
from megacode.data.batching import collate, position_ids, sample_arrays, sample_indices

__all__ = ["chunk_iterators", "collate", "position_ids", "sample_arrays", "sample_indices", "step_microbatches"]


def step_microbatches(dataset, consumed: int, layout: Layout, dp_rank: int,
                      device: torch.device) -> list[dict[str, torch.Tensor]]:
    """All micro-batches this DP rank runs in the step that starts after `consumed` samples."""
    batches = []
    for micro in range(layout.num_microbatches):
        batch = collate([dataset[i] for i in sample_indices(consumed, micro, layout, dp_rank)])
        batches.append({k: v.to(device, non_blocking=True) for k, v in batch.items()})
    return batches


def chunk_iterators(batches: list, num_chunks: int) -> list[Iterator] | Iterator:
    """Megatron's schedules take one iterator, or one per virtual pipeline chunk."""
    if num_chunks == 1:
        return iter(batches)
    return [iter(batches) for _ in range(num_chunks)]

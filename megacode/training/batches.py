"""Micro-batches for one optimizer step, taken by global sample index.

Every rank computes its own micro-batches from (dataset, consumed samples, DP rank), so TP and
PP peers need no broadcast and a resumed or re-sharded run reads exactly the same samples.
The order matches Megatron's pretraining sampler: micro-batch m of a step holds samples
`consumed + m·(mbs·dp) + dp_rank·mbs + [0, mbs)`.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from megacode.config import Layout


def sample_indices(consumed: int, micro: int, layout: Layout, dp_rank: int) -> range:
    start = consumed + micro * layout.micro_batch_size * layout.dp + dp_rank * layout.micro_batch_size
    return range(start, start + layout.micro_batch_size)


def collate(samples: Sequence) -> dict[str, torch.Tensor]:
    """Samples of `seq+1` tokens (or dicts with `tokens` and an optional `loss_mask`) → a batch.

    Shapes: tokens/labels/loss_mask/position_ids all `[b, s]`; labels are tokens shifted by one.
    A sample's `loss_mask` (instruct data: answers only) has `seq+1` entries aligned with its
    tokens; the label at position t is token t+1, so the mask is shifted the same way.
    """
    token_rows, mask_rows = [], []
    for sample in samples:
        if isinstance(sample, dict):
            tokens = np.asarray(sample["tokens"], dtype=np.int64)
            mask = np.asarray(sample.get("loss_mask", np.ones_like(tokens)), dtype=np.float32)
        else:
            tokens = np.asarray(sample, dtype=np.int64)
            mask = np.ones(tokens.shape, dtype=np.float32)
        token_rows.append(tokens)
        mask_rows.append(mask)
    full = torch.from_numpy(np.stack(token_rows))  # [b, s+1]
    mask = torch.from_numpy(np.stack(mask_rows))
    seq = full.shape[1] - 1
    return {
        "tokens": full[:, :-1].contiguous(),
        "labels": full[:, 1:].contiguous(),
        "loss_mask": mask[:, 1:].contiguous(),
        "position_ids": torch.arange(seq, dtype=torch.int64).unsqueeze(0).expand(full.shape[0], seq).contiguous(),
    }


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

"""Which samples make a micro-batch, and how samples become batch tensors.

Samples are taken by global index, so TP and PP peers need no broadcast and a resumed or
re-sharded run reads exactly the same samples. The order matches Megatron's pretraining sampler:
micro-batch m of a step holds samples `consumed + m·(mbs·dp) + dp_rank·mbs + [0, mbs)`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from megacode.config import Layout


def sample_indices(consumed: int, micro: int, layout: Layout, dp_rank: int) -> range:
    start = consumed + micro * layout.micro_batch_size * layout.dp + dp_rank * layout.micro_batch_size
    return range(start, start + layout.micro_batch_size)


def collate(samples: Sequence) -> dict[str, torch.Tensor]:
    """Samples of `seq+1` tokens (or dicts with `tokens` and an optional `loss_mask`), or one
    int64 array `[b, s+1]` of them (`read_batch`), → a batch.

    Shapes: tokens/labels/loss_mask/position_ids all `[b, s]`; labels are tokens shifted by one.
    A sample's `loss_mask` (instruct data: answers only) has `seq+1` entries aligned with its
    tokens; the label at position t is token t+1, so the mask is shifted the same way.
    """
    full_np, mask_np = batch_arrays(samples)
    full, mask = torch.from_numpy(full_np), torch.from_numpy(mask_np)  # [b, s+1]
    seq = full.shape[1] - 1
    return {
        "tokens": full[:, :-1].contiguous(),
        "labels": full[:, 1:].contiguous(),
        "loss_mask": mask[:, 1:].contiguous(),
        "position_ids": position_ids(full.shape[0], seq),
    }


def batch_arrays(samples) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int64 `[b, s+1]`, loss mask float32 `[b, s+1]`) of a list of samples or of a
    `[b, s+1]` array; shared with the DALI loader so both paths build bit-identical batches."""
    if isinstance(samples, np.ndarray):
        tokens = np.ascontiguousarray(samples, dtype=np.int64)
        return tokens, np.ones(tokens.shape, dtype=np.float32)
    rows = [sample_arrays(sample) for sample in samples]
    return np.stack([tokens for tokens, _ in rows]), np.stack([mask for _, mask in rows])


def sample_arrays(sample) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int64 `[s+1]`, loss mask float32 `[s+1]`) of one sample (array or dict); shared with
    the DALI loader so both paths build bit-identical batches."""
    if isinstance(sample, dict):
        tokens = np.asarray(sample["tokens"], dtype=np.int64)
        return tokens, np.asarray(sample.get("loss_mask", np.ones_like(tokens)), dtype=np.float32)
    tokens = np.asarray(sample, dtype=np.int64)
    return tokens, np.ones(tokens.shape, dtype=np.float32)


def position_ids(batch: int, seq: int, device: torch.device | None = None) -> torch.Tensor:
    """`[b, s]` positions 0..s-1 of every row."""
    return torch.arange(seq, dtype=torch.int64, device=device).unsqueeze(0).expand(batch, seq).contiguous()

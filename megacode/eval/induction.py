"""Copying probe: the loss on a random run of tokens the second time it appears.

A model that can copy from its context (induction heads, Olsson et al. 2022) predicts the
repeat of a random sequence far better than its first occurrence, which no model can predict.
Infilling rests on that ability (the middle must end where the suffix begins, found by
matching the suffix; <EOT> goes there) and so does key retrieval (the key is copied from far
back), so the probe tells whether a small model has the mechanism those tasks need at all.

    seqs = repeated_sequences(tok, count=32, length=64, seed=0)   # <s> r_1..r_n r_1..r_n
    copy_probe(model, seqs, 64) -> {"first": 7.6, "repeat": 0.4, "gain": 7.2}
"""

from __future__ import annotations

import random
from typing import Dict, List

import numpy as np


def plain_pieces(tok) -> List[int]:
    """Ids of ordinary text pieces: no control, byte-fallback or infilling pieces."""
    special = {tok.bos_id, tok.eos_id, tok.pad_id, tok.pre_id, tok.suf_id, tok.mid_id, tok.eot_id}
    out = []
    for i in range(tok.vocab_size):
        piece = tok.id_to_piece(i)
        if i not in special and not (piece.startswith("<") and piece.endswith(">")) and "<" not in piece[1:2]:
            out.append(i)
    return out


def repeated_sequences(tok, count: int, length: int, seed: int) -> List[List[int]]:
    """`count` sequences `<s> r r` with r `length` ids drawn uniformly from the plain pieces."""
    if count < 1 or length < 2:
        raise ValueError(f"need count >= 1 and length >= 2, got {count}, {length}")
    ids = plain_pieces(tok)
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        run = [rng.choice(ids) for _ in range(length)]
        out.append([tok.bos_id] + run + run)
    return out


def copy_probe(model, sequences: List[List[int]], length: int) -> Dict[str, float]:
    """Mean loss over the first occurrence (its tokens 2..n: the first has no context at all) and
    over the repeat; `gain` = first - repeat, in nats per token."""
    from megacode.eval.lm_scoring import token_losses

    losses = token_losses(model, sequences, desc="copy probe")  # loss[k] predicts token k + 1
    first = np.concatenate([loss[1:length] for loss in losses])  # tokens 2..n of the first run
    repeat = np.concatenate([loss[length:2 * length] for loss in losses])  # the n tokens of the repeat
    return {"first": float(first.mean()), "repeat": float(repeat.mean()), "gain": float(first.mean() - repeat.mean())}

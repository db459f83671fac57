"""Held-out losses of a causal LM: per-token losses, a target span given a context, and the loss
of the same tokens read with different context lengths (Code Llama Figure 4a).

`model` is any causal LM called as `model(input_ids=[b, s]).logits -> [b, s, V]`, e.g. the
Hugging Face `LlamaForCausalLM` of a megacode export (megacode.convert). All losses are natural
log (nats) per token; perplexity = exp(loss).

    token_losses(model, [ids, ...])                    -> [array [len(ids) - 1], ...]
    greedy_reproduces(model, [(context, target), ...]) -> [bool, ...]
    span_losses(model, [(context, target), ...])       -> [array [len(target)], ...]
    loss_by_context_length(model, docs, [128, 256], span) -> {128: loss, 256: loss}

Sequences are scored in batches of similar lengths, right-padded: with causal attention the
padding after a sequence changes none of its logits, so no attention mask is needed.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)


def _batches(model, seqs: List[np.ndarray], max_batch_tokens: int, desc: str
             ) -> Iterator[Tuple[List[int], object, object]]:
    """(indices, ids [b, s], logits [b, s, V] float32) over `seqs`, shortest first, right-padded with id 0."""
    import torch

    order = sorted(range(len(seqs)), key=lambda k: (seqs[k].size, k))
    total = sum(s.size for s in seqs)
    started = last_log = time.monotonic()
    first = done = 0
    while first < len(order):
        count = 1
        # grow the batch while the padded batch (the longest, i.e. last, sequence) fits the budget
        while first + count < len(order) and seqs[order[first + count]].size * (count + 1) <= max_batch_tokens:
            count += 1
        batch = order[first:first + count]
        ids = torch.zeros((len(batch), seqs[batch[-1]].size), dtype=torch.long)
        for row, k in enumerate(batch):
            ids[row, :seqs[k].size] = torch.from_numpy(seqs[k])
        with torch.no_grad():
            yield batch, ids, model(input_ids=ids).logits.float()
        first += count
        done += sum(seqs[k].size for k in batch)
        if time.monotonic() - last_log > 30:
            last_log = time.monotonic()
            rate = done / max(last_log - started, 1e-9)
            log.info("%s: %d/%d tokens, %.0f tokens/s, ETA %.0f s", desc, done, total, rate, (total - done) / rate)


def _as_arrays(sequences: Sequence[Sequence[int]]) -> List[np.ndarray]:
    seqs = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences]
    short = [k for k, s in enumerate(seqs) if s.size < 2]
    if short:
        raise ValueError(f"sequence {short[0]} has {seqs[short[0]].size} token(s); scoring needs at least 2")
    return seqs


def token_losses(model, sequences: Sequence[Sequence[int]], max_batch_tokens: int = 16384,
                 desc: str = "scoring") -> List[np.ndarray]:
    """For each sequence of n ids, the loss of ids[1:] each given the ids before it: `[n - 1]`."""
    import torch

    seqs = _as_arrays(sequences)
    out: List[np.ndarray] = [np.empty(0)] * len(seqs)
    for batch, ids, logits in _batches(model, seqs, max_batch_tokens, desc):
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        for row, k in enumerate(batch):
            out[k] = nll[row, :seqs[k].size - 1].double().numpy()
    return out


def greedy_reproduces(model, pairs: Sequence[Tuple[Sequence[int], Sequence[int]]], max_batch_tokens: int = 16384,
                      desc: str = "greedy check") -> List[bool]:
    """For each (context, target): whether greedy decoding from the context writes exactly the
    target's ids first (each target id is the argmax given the context and the target before it)."""
    seqs = _as_arrays([list(c) + list(t) for c, t in pairs])
    out = [False] * len(seqs)
    for batch, ids, logits in _batches(model, seqs, max_batch_tokens, desc):
        guess = logits.argmax(-1)  # [b, s]
        for row, k in enumerate(batch):
            n_ctx, n = len(pairs[k][0]), seqs[k].size
            out[k] = bool((guess[row, n_ctx - 1:n - 1] == ids[row, n_ctx:n]).all())
    return out


def span_losses(model, pairs: Sequence[Tuple[Sequence[int], Sequence[int]]], max_batch_tokens: int = 16384,
                desc: str = "span losses") -> List[np.ndarray]:
    """For each (context, target), the loss of every target token given the context and the
    target tokens before it: `[len(target)]`. The context must not be empty."""
    for k, (context, target) in enumerate(pairs):
        if len(context) == 0 or len(target) == 0:
            raise ValueError(f"pair {k}: context and target must not be empty ({len(context)}, {len(target)} ids)")
    losses = token_losses(model, [list(c) + list(t) for c, t in pairs], max_batch_tokens, desc)
    return [loss[len(c) - 1:] for loss, (c, _) in zip(losses, pairs)]


def context_windows(doc: np.ndarray, length: int, span: int) -> List[np.ndarray]:
    """Windows of `length` + 1 tokens over doc[:span + 1], overlapping by one token, so that each
    of tokens 1..span is predicted exactly once, with 1 to `length` tokens of context (the
    training samples' layout: inputs = window[:-1], labels = window[1:])."""
    if span % length:
        raise ValueError(f"span {span} is not a multiple of the context length {length}")
    if doc.size < span + 1:
        raise ValueError(f"document of {doc.size} tokens is shorter than span + 1 = {span + 1}")
    return [doc[start:start + length + 1] for start in range(0, span, length)]


def loss_by_context_length(model, documents: Sequence[np.ndarray], lengths: Sequence[int], span: int,
                           max_batch_tokens: int = 16384) -> Dict[int, float]:
    """Mean loss of tokens 1..span of every document, read in windows of each context length:
    the same tokens at every length, only the context they are predicted from differs. A model
    that uses longer context well has a loss that falls with the length; one that cannot read
    past its training length has a loss that rises beyond it."""
    docs = [np.asarray(d, dtype=np.int64).reshape(-1) for d in documents]
    if not docs:
        raise ValueError("no documents to score")
    result: Dict[int, float] = {}
    for length in lengths:
        windows = [w for d in docs for w in context_windows(d, int(length), span)]
        losses = token_losses(model, windows, max(max_batch_tokens, int(length) + 1), desc=f"context {length}")
        total = np.concatenate(losses)
        assert total.size == span * len(docs)
        result[int(length)] = float(total.mean())
    return result

"""Where a training sample's tokens come from, and the token-id range check that names it.

A sample of a PackedDataset is a run of (document, start, end) spans; a BlendedDataset sample
is one sample of one of its components. `sample_pieces` flattens both into `Piece`s naming the
dataset file, so an error or `tools/inspect_data.py` can point at the exact tokens on disk. A
FimDataset sample is located through its `layout` (`describe_position`), since a transformed
document shifts every position after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np


class TokenRangeError(ValueError):
    """A dataset holds a token id outside [0, vocab_size); the message names file, document and offset."""


@dataclass(frozen=True)
class Piece:
    """Tokens [start, end) of document `document` of dataset `prefix` (component `component` of a blend)."""

    component: int
    prefix: str
    document: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def source_of(dataset, i: int) -> tuple:
    """(component index, leaf dataset, sample index in it) for sample i; component 0 when not blended."""
    component = 0
    while hasattr(dataset, "source") and hasattr(dataset, "datasets"):  # BlendedDataset (may nest)
        d, j = dataset.source(i)
        component, dataset, i = d, dataset.datasets[d], j
    return component, dataset, int(i)


def sample_pieces(dataset, i: int) -> Optional[List[Piece]]:
    """The pieces sample i is made of, in order; None for datasets without documents (synthetic)."""
    component, leaf, j = source_of(dataset, i)
    if not hasattr(leaf, "pieces"):
        return None
    prefix = getattr(getattr(leaf, "indexed", None), "prefix", repr(leaf))
    return [Piece(component, prefix, int(doc), int(start), int(end)) for doc, start, end in leaf.pieces(j)]


def locate(pieces: List[Piece], position: int) -> tuple:
    """(piece, offset within its document) of token `position` of the sample."""
    seen = 0
    for piece in pieces:
        if position < seen + piece.length:
            return piece, piece.start + (position - seen)
        seen += piece.length
    raise IndexError(f"position {position} beyond the sample's {seen} tokens")


def describe_position(dataset, i: int, position: int) -> str:
    """Where token `position` of sample i comes from: dataset file, document and token offset.

    A dataset that rewrites documents (FimDataset: a transformed document changes length, so
    later positions no longer match the stored spans) gives its `layout(i)`, which says where each
    stored piece went and what was done to it; tokens of a rewritten document have no stored
    offset, so the document and the rewrite are named instead."""
    where = f"sample {i} position {position}"
    component, leaf, j = source_of(dataset, i)
    prefix = getattr(getattr(leaf, "indexed", None), "prefix", None)
    if prefix is not None and hasattr(leaf, "layout"):
        for (doc, start, _), first, last, what in leaf.layout(j):
            if first <= position < last and doc >= 0:
                if what.startswith("as stored"):
                    return (f"{prefix} (.bin/.idx) document {doc} token offset {start + position - first} "
                            f"(blend component {component}, {where})")
                return (f"{prefix} (.bin/.idx) document {doc}, rewritten ({what}): the id comes from re-encoding "
                        f"the document, not from the file (blend component {component}, {where})")
        return f"{prefix} (.bin/.idx), tokens read past the sample end (blend component {component}, {where})"
    pieces = sample_pieces(dataset, i)
    if pieces:
        piece, offset = locate(pieces, position)
        return (f"{piece.prefix} (.bin/.idx) document {piece.document} token offset {offset} "
                f"(blend component {piece.component}, {where})")
    return f"{dataset!r} {where}"


def sample_tokens(sample) -> np.ndarray:
    """The token array of a sample (an array, or a dict with `tokens`)."""
    return np.asarray(sample["tokens"] if isinstance(sample, dict) else sample)


def check_token_range(sample, vocab_size: int, dataset, i: int) -> None:
    """Raise TokenRangeError unless every token of sample i (of `dataset`) lies in [0, vocab_size).

    Cheap (one min/max over seq+1 ids): the loader runs it on every sample, so a dataset made
    with a larger tokenizer fails here, naming the file, instead of inside the embedding.
    """
    tokens = sample_tokens(sample)
    if tokens.size == 0:
        return
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo >= 0 and hi < vocab_size:
        return
    position = int(np.argmax((tokens < 0) | (tokens >= vocab_size)))
    bad = int(tokens[position])
    where = describe_position(dataset, i, position)
    raise TokenRangeError(f"token id {bad} outside the model vocabulary [0, {vocab_size}) in {where}; the data "
                          f"was tokenized with a larger vocabulary than data.vocab_size / the flavor's "
                          f"(re-tokenize, or set data.vocab_size to the tokenizer's size)")

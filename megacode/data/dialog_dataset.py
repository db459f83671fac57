"""Instruct samples: packed dialogs with their loss mask, on the ordinary sampling machinery.

On disk a dialog dataset is two Megatron indexed datasets with the same sequence lengths
(written by `megacode.instruct.prepare`):

    PREFIX.bin/.idx            token ids (uint16 below 65,500 pieces), one document per dialog
    PREFIX_lossmask.bin/.idx   uint8, 1 where the token is a training target (answers + their EOS)

A blend entry `{path: PREFIX, weight: W, kind: dialog}` in `data.paths` makes the builder wrap
the PackedDataset of PREFIX in a `DialogDataset`: the same shuffled document order, sample index
and cache as any text dataset (so seeds, resumption and blending behave identically), and each
sample's mask read from the same (document, start, end) spans as its tokens. Dialogs are packed
back to back and cut across samples like pretraining documents, as Llama 2's SFT did (Llama 2
§3.1: prompts and answers concatenated to fill the sequence, loss zeroed on prompt tokens).

Samples are `{"tokens": [s+1] int64, "loss_mask": [s+1] uint8}`; `megacode.data.batching.collate` shifts
the mask with the labels. Text components of the same blend (stage 4's rehearsal data) yield
plain arrays, i.e. a full mask.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

from megacode.data.indexed import IndexedDataset, IndexedDatasetError

LOSS_MASK_SUFFIX = "_lossmask"
PATH_KINDS = ("text", "dialog")
"""`kind` of a `data.paths` entry: plain documents (the default) or dialogs with a loss mask."""


def mask_prefix(prefix: str) -> str:
    """Where the loss mask of dialog dataset `prefix` lives."""
    return str(prefix) + LOSS_MASK_SUFFIX


def entry_kind(entry: dict, where: str = "data.paths") -> str:
    """The `kind` of one blend entry, checked (ValueError naming the entry otherwise)."""
    kind = entry.get("kind", "text")
    if kind not in PATH_KINDS:
        raise ValueError(f"{where} entry {entry!r}: kind must be one of {', '.join(PATH_KINDS)}, got {kind!r}")
    return kind


def open_mask(prefix: str, tokens: IndexedDataset) -> IndexedDataset:
    """The loss-mask dataset of `prefix`, checked against its token dataset."""
    path = mask_prefix(prefix)
    try:
        mask = IndexedDataset(path)
    except IndexedDatasetError as e:
        raise IndexedDatasetError(f"dialog dataset {prefix}: its loss mask {path}.bin/.idx cannot be opened "
                                  f"(made by tools/prepare_instruct.py?): {e}") from None
    if mask.dtype != np.uint8:
        raise IndexedDatasetError(f"{path}.idx: a loss mask is uint8, this file holds {mask.dtype}")
    if len(mask) != len(tokens) or not np.array_equal(mask.sequence_lengths, tokens.sequence_lengths):
        differ = (np.flatnonzero(mask.sequence_lengths != tokens.sequence_lengths)[:1].tolist()
                  if len(mask) == len(tokens) else "count")
        raise IndexedDatasetError(f"{path}.idx: sequence lengths differ from {tokens.prefix}.idx (first difference "
                                  f"at {differ}; {len(mask)} vs {len(tokens)} sequences): the two files are not "
                                  f"one dialog dataset")
    return mask


class DialogDataset:
    """A PackedDataset of dialog tokens plus the loss mask of the same spans.

    Args:
        packed: `megacode.data.gpt_dataset.PackedDataset` over the token dataset.
        mask: the `_lossmask` dataset; None opens it beside the token dataset.
    """

    def __init__(self, packed, mask: IndexedDataset | None = None) -> None:
        self.packed = packed
        self.mask = mask if mask is not None else open_mask(packed.indexed.prefix, packed.indexed)

    # What BlendedDataset, provenance and the loader look at: the packed dataset's.
    @property
    def indexed(self) -> IndexedDataset:
        return self.packed.indexed

    @property
    def cache(self):
        return self.packed.cache

    @property
    def cache_key(self) -> str:
        return self.packed.cache_key

    def __len__(self) -> int:
        return len(self.packed)

    def pieces(self, i: int) -> List[Tuple[int, int, int]]:
        return self.packed.pieces(i)

    def __getitem__(self, i: int) -> dict:
        spans = self.packed.pieces(i)
        tokens = np.concatenate([self.indexed.get(d, s, e - s) for d, s, e in spans]).astype(np.int64)  # [s+1]
        mask = np.concatenate([self.mask.get(d, s, e - s) for d, s, e in spans])  # [s+1] uint8
        return {"tokens": tokens, "loss_mask": mask}

    def __repr__(self) -> str:
        return f"DialogDataset({self.packed!r}, mask={self.mask.prefix!r})"

"""Packed GPT-style training samples from one indexed dataset.

The documents of a split are shuffled (each epoch on its own), concatenated, and cut into
samples of `seq_length + 1` tokens that overlap by one token (sample i covers global tokens
[i * seq_length, (i + 1) * seq_length]), so inputs = sample[:-1] and labels = sample[1:] cover
the stream without gaps. Documents run across sample boundaries and across epochs as needed;
`pieces(i)` tells which (document, start, end) spans sample i is made of, so the FIM transform
can tell whole documents from ones cut across contexts. Samples are served in a shuffled order.

The three index arrays (csrc/indices.cpp documents them) are built once and cached by
`megacode.data.index_cache` under a hash of everything they depend on.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from megacode.data import indices
from megacode.data.index_cache import IndexCache, array_digest, build_or_load
from megacode.data.indexed import IndexedDataset

INDEX_NAMES = ("document_order", "sample_index", "shuffle_index")
GATHER_DTYPES = (np.dtype(np.uint16), np.dtype(np.int32), np.dtype(np.int64))  # what read_batch reads


def split_documents(num_documents: int, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """Contiguous (train, valid) document ids for a 'train,valid' split in parts, e.g. '99,1'.

    Train gets the first round(n * train / (train + valid)) documents, valid the rest; a
    non-zero part keeps at least one document when n >= 2 (a small dataset under '99,1' still
    has something to validate on).
    """
    try:
        parts = [float(p) for p in str(split).split(",")]
    except ValueError:
        parts = []
    if len(parts) != 2 or min(parts) < 0 or sum(parts) <= 0:
        raise ValueError(f"split must be two non-negative parts 'train,valid' like '99,1', got {split!r}")
    n_train = int(round(num_documents * parts[0] / sum(parts)))
    if num_documents >= 2:
        n_train = min(max(n_train, 1 if parts[0] > 0 else 0), num_documents - 1 if parts[1] > 0 else num_documents)
    return np.arange(n_train, dtype=np.int64), np.arange(n_train, num_documents, dtype=np.int64)


class PackedDataset:
    """`num_samples` samples of `seq_length + 1` tokens (int64) packed from `split_docs` of `indexed`.

    Args:
        indexed: the dataset, or its path prefix.
        split_docs: `[N]` sequence ids this split may use (see `split_documents`).
        seq_length: tokens per training sequence; samples hold one more.
        num_samples: how many samples to build; epochs are added until they are covered.
        seed: decides the document shuffle of every epoch and the sample order.
        cache_dir: where the indices are cached; None = `index-cache/` beside the dataset.
    """

    def __init__(self, indexed: Union[IndexedDataset, str], split_docs, seq_length: int, num_samples: int,
                 seed: int, cache_dir: Optional[str] = None) -> None:
        self.indexed = indexed if isinstance(indexed, IndexedDataset) else IndexedDataset(indexed)
        self.seq_length = int(seq_length)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        docs = np.asarray(split_docs, dtype=np.int64).reshape(-1)
        n = len(self.indexed)
        if self.seq_length < 1 or self.num_samples < 0:
            raise ValueError(f"{self.indexed.prefix}: need seq_length >= 1 and num_samples >= 0, "
                             f"got {seq_length}, {num_samples}")
        if docs.size and (docs.min() < 0 or docs.max() >= n):
            bad = int(docs.min()) if docs.min() < 0 else int(docs.max())
            raise ValueError(f"{self.indexed.prefix}: split document id {bad} outside [0, {n})")
        self.split_docs = docs
        self._sizes = np.require(self.indexed.sequence_lengths, np.int32, ["C", "A"])  # [num sequences]
        self.tokens_per_epoch = int(self._sizes[docs].sum(dtype=np.int64)) if docs.size else 0
        if self.num_samples > 0 and self.tokens_per_epoch == 0:
            raise ValueError(f"{self.indexed.prefix}: the {docs.size} split documents hold no tokens; cannot "
                             f"build {self.num_samples} samples")
        self.num_epochs = (indices.num_epochs_needed(self.tokens_per_epoch, self.seq_length, self.num_samples)
                           if self.num_samples > 0 else 0)
        cache_dir = cache_dir or os.path.join(os.path.dirname(os.path.abspath(self.indexed.prefix)), "index-cache")
        self.cache = IndexCache(cache_dir, "packed", {
            "dataset": list(self.indexed.identity()),
            "split_docs": array_digest(docs),
            "num_split_docs": int(docs.size),
            "seq_length": self.seq_length,
            "num_samples": self.num_samples,
            "seed": self.seed,
        }, INDEX_NAMES)
        arrays, self.built = build_or_load(self.cache, self._build)
        self.document_order = arrays["document_order"]  # [E * N] document ids
        self.sample_index = arrays["sample_index"]  # [M + 1, 2] (order position, offset)
        self.shuffle_index = arrays["shuffle_index"]  # [M] sample served at each position

    @property
    def cache_key(self) -> str:
        return self.cache.key

    def _build(self) -> dict:
        if self.num_samples == 0:
            empty = np.zeros(0, dtype=np.int32)
            return {"document_order": empty, "sample_index": np.zeros((1, 2), np.int32), "shuffle_index": empty}
        order = indices.build_document_order(self.split_docs, self.num_epochs, self.seed)
        sample_index = indices.build_sample_index(self._sizes, order, self.seq_length, self.num_samples)
        shuffle = indices.build_shuffle_index(self.num_samples, self.seed)
        return {"document_order": order, "sample_index": sample_index, "shuffle_index": shuffle}

    def __len__(self) -> int:
        return self.num_samples

    def _sample(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.num_samples
        if not 0 <= i < self.num_samples:
            raise IndexError(f"{self.indexed.prefix}: sample {i} out of range [0, {self.num_samples})")
        return int(self.shuffle_index[i])

    def pieces(self, i: int) -> List[Tuple[int, int, int]]:
        """(document id, start, end) spans, end exclusive, that sample i is made of, in order."""
        return indices.sample_pieces(self.sample_index, self.document_order, self._sizes, self._sample(i))

    def __getitem__(self, i: int) -> np.ndarray:
        """Sample i: `[seq_length + 1]` int64 token ids."""
        spans = self.pieces(i)
        if len(spans) == 1:
            doc, start, end = spans[0]
            return self.indexed.get(doc, start, end - start).astype(np.int64)
        out = np.concatenate([self.indexed.get(doc, start, end - start) for doc, start, end in spans])
        return out.astype(np.int64, copy=False)

    @property
    def can_read_batch(self) -> bool:
        """Whether `read_batch` serves this dataset (token files of uint16, int32 or int64)."""
        return self.indexed.dtype in GATHER_DTYPES

    def read_batch(self, ids: Sequence[int]) -> np.ndarray:
        """Samples `ids` as one `[len(ids), seq_length + 1]` int64 array, row r = self[ids[r]]:
        one C++ call that walks the indices and copies from the .bin with the GIL released, so
        loader threads read side by side (csrc/indices.cpp `gather_samples`)."""
        return indices.gather_samples(self.indexed._tokens, self.indexed.sequence_pointers, self._sizes,
                                      self.document_order, self.sample_index, self.shuffle_index, ids,
                                      self.seq_length)

    def __getstate__(self) -> dict:
        # Loader workers re-map the cached arrays instead of receiving copies of them.
        state = dict(self.__dict__)
        for name in INDEX_NAMES + ("_sizes",):
            del state[name]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._sizes = np.require(self.indexed.sequence_lengths, np.int32, ["C", "A"])
        for name, array in self.cache.load().items():  # no collective here: workers are not ranks
            setattr(self, name, array)

    def __repr__(self) -> str:
        return (f"PackedDataset({self.indexed.prefix!r}, docs={self.split_docs.size}, seq_length={self.seq_length}, "
                f"samples={self.num_samples}, epochs={self.num_epochs}, seed={self.seed})")

"""Blending several sample datasets by weight (Code Llama stage 1: code 85%, NL about code 8%, NL 7%).

Blended sample s comes from the dataset furthest below `weight * (s + 1)` samples (ties to the
lower index), so every prefix of the blend holds each dataset within one sample of its share
and the order depends on the weights alone. Components are built with exactly the number of
samples the blend takes from them (`blend_counts`); the index is cached like the sample
indices, keyed by the components' own cache keys, the weights, the sample count and the seed.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from megacode.data import indices
from megacode.data.index_cache import IndexCache, build_or_load

BLEND_NAMES = ("dataset_index", "dataset_sample_index")


def _component_key(ds) -> str:
    key = getattr(ds, "cache_key", None)
    if key is None:
        raise TypeError(f"blended datasets need a cache_key (PackedDataset or BlendedDataset), got {ds!r}")
    return key


class BlendedDataset:
    """`num_samples` samples drawn from `datasets` in proportion to `weights`.

    Args:
        datasets: sample datasets with `__len__`, `__getitem__`, `cache_key` (e.g. PackedDataset).
        weights: positive, normalized here.
        num_samples: length of the blend; dataset d must hold at least its count
            (`indices.blend_counts(weights, num_samples)[d]`).
        seed: part of the cache key (the blend order itself needs no random draw).
        cache_dir: where the blend index is cached; None = the first dataset's cache directory.
    """

    def __init__(self, datasets: Sequence, weights: Sequence[float], num_samples: int, seed: int,
                 cache_dir: Optional[str] = None) -> None:
        self.datasets = list(datasets)
        if not self.datasets or len(weights) != len(self.datasets):
            raise ValueError(f"need one weight per dataset, got {len(weights)} weights for "
                             f"{len(self.datasets)} datasets")
        self.weights = indices.normalize_weights(weights)
        self.num_samples = int(num_samples)
        if self.num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self.seed = int(seed)
        counts = indices.blend_counts(self.weights, self.num_samples)
        for d, (ds, count) in enumerate(zip(self.datasets, counts)):
            if len(ds) < count:
                raise ValueError(f"blend of {self.num_samples} samples takes {count} from dataset {d} ({ds!r}) "
                                 f"with weight {self.weights[d]:.4f}, but it holds only {len(ds)}")
        self.counts = counts  # [D] samples taken from each dataset
        if cache_dir is None:
            first_cache = getattr(self.datasets[0], "cache", None)
            cache_dir = first_cache.cache_dir if first_cache is not None else os.getcwd()
        self.cache = IndexCache(cache_dir, "blend", {
            "components": [_component_key(ds) for ds in self.datasets],
            "weights": [float(w) for w in self.weights],
            "num_samples": self.num_samples,
            "seed": self.seed,
        }, BLEND_NAMES)
        arrays, self.built = build_or_load(self.cache, self._build)
        self.dataset_index = arrays["dataset_index"]  # [n] int16
        self.dataset_sample_index = arrays["dataset_sample_index"]  # [n] int64

    def _build(self) -> dict:
        dataset_index, dataset_sample_index = indices.build_blend_index(self.weights, self.num_samples)
        return {"dataset_index": dataset_index, "dataset_sample_index": dataset_sample_index}

    @property
    def cache_key(self) -> str:
        return self.cache.key

    def __len__(self) -> int:
        return self.num_samples

    def source(self, i: int) -> Tuple[int, int]:
        """(dataset, sample in that dataset) of blended sample i."""
        i = int(i)
        if i < 0:
            i += self.num_samples
        if not 0 <= i < self.num_samples:
            raise IndexError(f"blended sample {i} out of range [0, {self.num_samples})")
        return int(self.dataset_index[i]), int(self.dataset_sample_index[i])

    def __getitem__(self, i: int) -> np.ndarray:
        d, j = self.source(i)
        return self.datasets[d][j]

    @property
    def can_read_batch(self) -> bool:
        """Whether `read_batch` serves this blend: every component reads batches."""
        return all(getattr(d, "can_read_batch", False) for d in self.datasets)

    def read_batch(self, ids: Sequence[int]) -> np.ndarray:
        """Blended samples `ids` as one `[len(ids), seq_length + 1]` int64 array, row r =
        self[ids[r]]: one `read_batch` per component for the rows it serves."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_samples):
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise IndexError(f"blended sample {bad} out of range [0, {self.num_samples})")
        which, within = self.dataset_index[ids], self.dataset_sample_index[ids]
        out = np.empty((ids.size, self.datasets[0].seq_length + 1), dtype=np.int64)
        for d in np.unique(which).tolist():
            rows = np.flatnonzero(which == d)
            out[rows] = self.datasets[d].read_batch(within[rows])
        return out

    def pieces(self, i: int) -> List[Tuple[int, int, int]]:
        """The (document id, start, end) spans of sample i, ids within its source dataset."""
        d, j = self.source(i)
        return self.datasets[d].pieces(j)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in BLEND_NAMES:
            del state[name]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        for name, array in self.cache.load().items():
            setattr(self, name, array)

    def __repr__(self) -> str:
        return f"BlendedDataset({len(self.datasets)} datasets, weights={self.weights.round(4).tolist()}, samples={self.num_samples})"

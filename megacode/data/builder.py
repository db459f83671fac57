"""Train and validation datasets from a `DataConfig` (the one place the data config is read).

`data.paths` is the blend ({path, weight} per dataset; `kind: dialog` marks an instruct dataset
whose samples carry a loss mask, see megacode/data/dialog_dataset.py). Validation uses `data.valid_paths` when
given (all their documents), else the `data.split` tail of each training dataset, blended with
the same weights over the datasets whose tail is not empty. Each component gets its own seed,
derived from the run seed, the split name and its position, and exactly the number of samples
the blend takes from it.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from megacode.data import indices
from megacode.data.blend import BlendedDataset
from megacode.data.gpt_dataset import PackedDataset, split_documents
from megacode.data.index_cache import derive_seed
from megacode.data.indexed import IndexedDataset
from megacode.data.dialog_dataset import DialogDataset, entry_kind


def _entries(paths: Sequence[dict]) -> List[Tuple[str, float]]:
    return [(str(e["path"]), float(e.get("weight", 1.0))) for e in paths]


def _blend(name: str, parts: List[Tuple[IndexedDataset, np.ndarray, float]], seq_length: int,
           num_samples: int, seed: int, cache_dir: str, dialog_prefixes: frozenset = frozenset()):
    """One PackedDataset per (dataset, docs, weight); a BlendedDataset when there are several.
    Datasets named in `dialog_prefixes` (`kind: dialog` entries) also carry their loss mask."""
    counts = indices.blend_counts([w for _, _, w in parts], num_samples)
    packed = [PackedDataset(ds, docs, seq_length, int(count), derive_seed(seed, name, k), cache_dir)
              for k, ((ds, docs, _), count) in enumerate(zip(parts, counts))]
    packed = [DialogDataset(p) if p.indexed.prefix in dialog_prefixes else p for p in packed]
    if len(packed) == 1:
        return packed[0]
    return BlendedDataset(packed, [w for _, _, w in parts], num_samples, derive_seed(seed, name, "blend"),
                          cache_dir)


def build_datasets(data_cfg, seed: int, num_train_samples: int, num_valid_samples: int
                   ) -> Tuple[Optional[object], Optional[object]]:
    """(train, valid) sample datasets for `data_cfg` (a `megacode.config.DataConfig`).

    Returns (None, None) when `data_cfg.paths` is empty: the caller uses the synthetic stream.
    valid is None when `num_valid_samples` is 0 or no validation documents exist.
    Every rank must call this together under torch.distributed (rank 0 builds the caches).
    """
    if not data_cfg.paths:
        return None, None
    train_entries = _entries(data_cfg.paths)
    dialog = frozenset(str(e["path"]) for e in list(data_cfg.paths) + list(data_cfg.valid_paths)
                       if entry_kind(e) == "dialog")
    cache_dir = data_cfg.cache_dir or os.path.join(os.path.dirname(os.path.abspath(train_entries[0][0])),
                                                   "index-cache")
    opened = {}

    def open_ds(prefix: str) -> IndexedDataset:
        if prefix not in opened:
            opened[prefix] = IndexedDataset(prefix)
        return opened[prefix]

    train_parts, valid_parts = [], []
    for prefix, weight in train_entries:
        ds = open_ds(prefix)
        if data_cfg.valid_paths:
            train_docs, valid_docs = np.arange(len(ds), dtype=np.int64), None
        else:
            train_docs, valid_docs = split_documents(len(ds), data_cfg.split)
        if train_docs.size == 0:
            raise ValueError(f"{prefix}: split {data_cfg.split!r} leaves no training documents of {len(ds)}")
        train_parts.append((ds, train_docs, weight))
        if valid_docs is not None and valid_docs.size:
            valid_parts.append((ds, valid_docs, weight))
    if data_cfg.valid_paths:
        for prefix, weight in _entries(data_cfg.valid_paths):
            ds = open_ds(prefix)
            valid_parts.append((ds, np.arange(len(ds), dtype=np.int64), weight))

    train = _blend("train", train_parts, data_cfg.seq_length, int(num_train_samples), seed, cache_dir, dialog)
    valid = None
    if num_valid_samples > 0 and valid_parts:
        valid = _blend("valid", valid_parts, data_cfg.seq_length, int(num_valid_samples), seed, cache_dir, dialog)
    return train, valid

"""Range-checked wrappers around the C++ index builders (csrc/indices.cpp documents the arrays).

Vocabulary used here and in `gpt_dataset.py`:

- *document*: one sequence of an `IndexedDataset` (Megatron's GPT datasets split and pack by
  sequence; our writer stores each document as one sequence).
- *document order* `[E * N]`: E epochs of the N documents of a split, each epoch shuffled on its
  own, so every document appears once per epoch; as many epochs as the samples need.
- *sample index* `[M + 1, 2]`: row i = (position in the document order, token offset) where
  sample i starts; sample i is `seq_length + 1` tokens, rows i .. i + 1 inclusive.
- *shuffle index* `[M]`: the order in which samples are served.
- *blend index*: for each blended sample, which dataset and which of its samples.

Every random choice comes from (seed, stream) through SplitMix64, so the indices depend on
nothing but the inputs and are identical on every machine.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from megacode import _indices

INT32_MAX = np.iinfo(np.int32).max
SAMPLE_SHUFFLE_STREAM = 0  # document order epoch e uses stream e + 1


def _index_dtype(largest: int) -> np.dtype:
    return np.dtype(np.int32) if largest <= INT32_MAX else np.dtype(np.int64)


def _seed(seed: int) -> int:
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2^64), got {seed}")
    return seed


def num_epochs_needed(tokens_per_epoch: int, seq_length: int, num_samples: int) -> int:
    """Epochs whose tokens cover `num_samples` samples of `seq_length + 1` overlapping tokens."""
    if tokens_per_epoch <= 0:
        raise ValueError(f"the documents hold {tokens_per_epoch} tokens; cannot build samples from them")
    needed = num_samples * seq_length + 1
    return max(1, -(-needed // tokens_per_epoch))


def build_document_order(docs: np.ndarray, num_epochs: int, seed: int) -> np.ndarray:
    """`[num_epochs * len(docs)]` document ids, each epoch its own permutation of `docs`."""
    docs = np.ascontiguousarray(docs, dtype=np.int64).reshape(-1)
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
    if docs.size and docs.min() < 0:
        raise ValueError(f"document ids must be >= 0, got {int(docs.min())}")
    largest = int(docs.max()) if docs.size else 0
    build = (_indices.build_document_order_int32 if _index_dtype(largest) == np.int32
             else _indices.build_document_order_int64)
    return build(docs, int(num_epochs), _seed(seed))


def build_shuffle_index(n: int, seed: int, stream: int = SAMPLE_SHUFFLE_STREAM) -> np.ndarray:
    """A permutation of `0 .. n-1` drawn from (seed, stream)."""
    if n < 0:
        raise ValueError(f"shuffle size must be >= 0, got {n}")
    build = _indices.build_shuffle_index_int32 if n <= INT32_MAX else _indices.build_shuffle_index_int64
    return build(int(n), _seed(seed), int(stream))


def build_sample_index(sizes: np.ndarray, order: np.ndarray, seq_length: int, num_samples: int) -> np.ndarray:
    """`[num_samples + 1, 2]` rows (position in `order`, offset); see the module docstring.

    sizes: `[num documents]` token counts indexed by document id; order: document ids.
    """
    sizes = np.ascontiguousarray(sizes, dtype=np.int32).reshape(-1)
    order = np.asarray(order).reshape(-1)
    if seq_length < 1 or num_samples < 0:
        raise ValueError(f"need seq_length >= 1 and num_samples >= 0, got {seq_length}, {num_samples}")
    if sizes.size and int(sizes.min()) < 0:
        raise ValueError(f"document sizes must be >= 0, got {int(sizes.min())}")
    # C++ checks each document id against len(sizes) and that the order holds enough tokens.
    dtype = _index_dtype(max(order.shape[0], int(sizes.max()) if sizes.size else 0))
    build = _indices.build_sample_index_int32 if dtype == np.int32 else _indices.build_sample_index_int64
    try:
        return build(sizes, np.ascontiguousarray(order, dtype=dtype), int(seq_length), int(num_samples))
    except ValueError as e:
        raise ValueError(f"build_sample_index: {e}") from None


def sample_pieces(sample_index: np.ndarray, order: np.ndarray, sizes: np.ndarray, i: int
                  ) -> List[Tuple[int, int, int]]:
    """The (document id, start, end) pieces, end exclusive, that sample i (unshuffled) is made of.

    Empty documents inside a sample are left out. A document is cut across contexts when its
    piece does not span [0, size) -- what the FIM transform needs to know.
    """
    num_samples = sample_index.shape[0] - 1
    if not 0 <= i < num_samples:
        raise IndexError(f"sample {i} out of range [0, {num_samples})")
    k0, off0 = (int(v) for v in sample_index[i])
    k1, off1 = (int(v) for v in sample_index[i + 1])
    if k0 == k1:
        return [(int(order[k0]), off0, off1 + 1)]
    pieces = [(int(order[k0]), off0, int(sizes[order[k0]]))]
    for k in range(k0 + 1, k1):
        doc = int(order[k])
        if sizes[doc] > 0:
            pieces.append((doc, 0, int(sizes[doc])))
    pieces.append((int(order[k1]), 0, off1 + 1))
    return pieces


def gather_samples(tokens: np.ndarray, pointers: np.ndarray, sizes: np.ndarray, order: np.ndarray,
                   sample_index: np.ndarray, shuffle: np.ndarray, ids: Sequence[int], seq_length: int) -> np.ndarray:
    """Packed samples `ids` (shuffled positions) as int64 `[len(ids), seq_length + 1]`, read from
    `tokens` (the .bin) through the indices above; one C++ call with the GIL released."""
    return _indices.gather_samples(tokens, pointers, sizes, order, sample_index, shuffle,
                                   np.asarray(ids, dtype=np.int64).reshape(-1), int(seq_length))


def normalize_weights(weights: Sequence[float]) -> np.ndarray:
    """Weights as float64 summing to 1; each must be finite and positive."""
    w = np.asarray([float(x) for x in weights], dtype=np.float64)
    if w.size == 0 or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"blend weights must be finite and positive, got {list(weights)}")
    return w / w.sum()


def build_blend_index(weights: Sequence[float], num_samples: int) -> Tuple[np.ndarray, np.ndarray]:
    """(dataset `int16[n]`, sample within that dataset `int64[n]`), following the weights.

    Each sample goes to the dataset furthest below its share, so after any prefix of s samples
    every dataset holds within one sample of weight * s. The weights alone decide the order.
    """
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    return _indices.build_blend_index(normalize_weights(weights), int(num_samples))


def blend_counts(weights: Sequence[float], num_samples: int) -> np.ndarray:
    """`int64[D]` samples each dataset contributes to a blend of `num_samples`."""
    dataset_index, _ = build_blend_index(weights, num_samples)
    return np.bincount(dataset_index, minlength=len(weights)).astype(np.int64)

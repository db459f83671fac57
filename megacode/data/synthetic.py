"""A deterministic, learnable token stream for runs before (or without) a real corpus.

Sample i is an arithmetic progression modulo the vocabulary, `(a + b·t) mod V`, with start
`a` and stride `b` drawn from (seed, i). The next token follows from the two before it, so a
model's loss falls fast — a real learning signal for smoke runs and tests, with no files.
"""

from __future__ import annotations

import numpy as np


class SyntheticTokens:
    """Map-style dataset: `ds[i]` is an int64 array of `seq_length + 1` tokens."""

    def __init__(self, vocab_size: int, seq_length: int, seed: int, num_samples: int = 2**40,
                 max_stride: int = 7):
        if vocab_size < 2 or seq_length < 1:
            raise ValueError(f"synthetic tokens need vocab_size >= 2 and seq_length >= 1, "
                             f"got {vocab_size}, {seq_length}")
        self.vocab_size = vocab_size
        self.seq_length = seq_length
        self.seed = seed
        self.num_samples = num_samples
        self.max_stride = max_stride

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} out of range [0, {self.num_samples})")
        rng = np.random.default_rng([self.seed, index])
        start = int(rng.integers(0, self.vocab_size))
        stride = int(rng.integers(1, self.max_stride + 1))
        positions = np.arange(self.seq_length + 1, dtype=np.int64)
        return (start + stride * positions) % self.vocab_size

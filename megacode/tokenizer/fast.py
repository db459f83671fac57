"""The C++ SentencePiece core: an exact BPE encoder of our own (csrc/spm_bpe.h), GIL released.

Which SentencePiece core, and why (DESIGN.md §4b; figures from `tools/bench_data.py`, this
machine kind: 2 cores, 28–31 MB of Python stdlib sources, a 32k Llama-style BPE model, one core):

    PyPI `sentencepiece` 0.2.3 binding, encode(list, num_threads=1)   ~1.0–1.1 M tokens/s
    Debian libsentencepiece 0.1.97 (C++, EncodeAsIds)                 ~0.5–0.6 M tokens/s
    this encoder, word cache off (every word through BPE)             see `bench_data.py --cores`
    this encoder (word cache)                                         ~4–5 M tokens/s

- The binding's speed comes from sentencepiece 0.2.2/0.2.3: `EncodeOptimized` (ids straight
  from the model, no SentencePieceText proto and no offset bookkeeping) and the rewritten
  `bpe_model.cc` (value-type heap entries, heapified initial pairs, integer score compares,
  no reserved-map lookups). Debian ships 0.1.97, which has neither.
- 0.2.3's C++ cannot be built at `make setup` time from PyPI/Debian sources: its CMake fetches
  abseil/protobuf with git (no network), and Debian's abseil (20220623) lacks `absl/log`.
  The binding exports only `PyInit__sentencepiece`, so its C++ cannot be linked either.
- Driving the binding from Python threads (it releases the GIL) gives 1.54x on 2 threads and
  still pays a Python list per document.
- So: an exact BPE encoder of our own, for the models we use (BPE, identity normalization,
  byte fallback: Llama 2 and Code Llama). It follows 0.2.3's merge order exactly and adds a
  word cache that is exact by construction (see csrc/spm_bpe.h). Its ids are checked against the
  binding id for id by tests/data/test_tokenizer_parity.py (stdlib sources, CJK, emoji,
  accented Latin, bytes needing byte fallback, user-defined pieces, no-byte-fallback models),
  and on every load against a built-in sample (`FastEncoder.self_check`). Models outside that
  scope (Unigram, NFKC, ...) raise `UnsupportedModel` and `megacode.tokenizer` falls back to the
  binding.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from megacode import _tokenize


class UnsupportedModel(ValueError):
    """The model is outside the C++ encoder's scope; use the SentencePiece binding."""


# Mixed sample for the load-time self check: code, spaces, CJK, emoji, accents, rare code points.
SELF_CHECK_TEXTS = (
    "def f(x):\n    return x ** 2  # square\n",
    "  leading and trailing  ",
    "naïve café — 東京 ☺ 😀👍🏽 \U0001F9EC \u0378\uFFFD\U0010FFFD",
    "\t\r\n\x00\x7f",
    " ",
    "",
)


class FastEncoder:
    """Range-checked wrapper of `megacode._tokenize.Encoder` for one serialized ModelProto."""

    def __init__(
        self, serialized_model: bytes, vocab_size: int, cache_entries: int = 1 << 20, linear_max_symbols: int = 48
    ) -> None:
        """cache_entries: words per thread cache before it is cleared; linear_max_symbols: words up
        to this many symbols merge by scanning, longer ones through a heap (tests vary both)."""
        if cache_entries < 1 or linear_max_symbols < 0:
            raise ValueError(f"need cache_entries >= 1 and linear_max_symbols >= 0, "
                             f"got {cache_entries}, {linear_max_symbols}")
        try:
            self._enc = _tokenize.Encoder(serialized_model, cache_entries, linear_max_symbols)
        except ValueError as e:
            raise UnsupportedModel(str(e)) from None
        if self._enc.vocab_size != vocab_size:
            raise RuntimeError(f"C++ encoder read {self._enc.vocab_size} pieces, SentencePiece {vocab_size}")
        self.vocab_size = vocab_size

    def _check_id(self, name: str, value) -> int:
        if value is None:
            return -1
        if not 0 <= int(value) < self.vocab_size:
            raise ValueError(f"{name}={value} is outside the vocabulary [0, {self.vocab_size})")
        return int(value)

    def encode(self, text: str, dummy_prefix: bool = True, prefix_id=None, suffix_id=None) -> List[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return self._enc.encode(
            text, dummy_prefix, self._check_id("prefix_id", prefix_id), self._check_id("suffix_id", suffix_id)
        )

    def encode_batch(
        self, texts: Sequence[str], num_threads: int = 1, dummy_prefix: bool = True, prefix_id=None, suffix_id=None
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Returns (tokens [sum(lengths)] int32, lengths [len(texts)] int64), in input order."""
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
        return self._enc.encode_batch(
            texts, num_threads, dummy_prefix,
            self._check_id("prefix_id", prefix_id), self._check_id("suffix_id", suffix_id),
        )

    def self_check(self, reference) -> None:
        """Compare with a SentencePieceProcessor on SELF_CHECK_TEXTS; raise on any difference."""
        for text in SELF_CHECK_TEXTS:
            ours, theirs = self.encode(text), reference.encode(text)
            if ours != theirs:
                raise RuntimeError(
                    f"C++ encoder disagrees with sentencepiece on {text!r}: {ours} != {theirs}; "
                    "load the tokenizer with backend='sentencepiece' and report this"
                )

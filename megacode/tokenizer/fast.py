"""The C++ SentencePiece core: an exact BPE encoder of our own (csrc/spm_bpe.h), GIL released.

Which SentencePiece core, and why (DESIGN.md §4b). Figures from `tools/bench_data.py --cores`
on this machine kind (2 vCPUs, shared with other jobs, so best-of-rounds; Python stdlib sources,
31.5 MB, 9.17 M tokens; a 32k Llama 2-style BPE model; one thread each):

    PyPI sentencepiece 0.2.3 binding, encode(list, num_threads=1)    1.17-1.26 M tokens/s
    Debian libsentencepiece 0.1.97, C++ Encode(text, &ids)           0.61-0.70 M tokens/s
    this encoder without its word cache (every word through BPE)    ~9 M tokens/s
    this encoder                                                   15-22 M tokens/s
    (all four give the same ids: identical checksums in the bench)

- Where the binding's 2x over Debian comes from: the code of sentencepiece 0.2.2/0.2.3, not
  the allocator (ldd: both use glibc malloc, no tcmalloc). 0.2.3 encodes
  ids through `EncodeOptimized` (no SentencePieceText proto with per-piece strings and offsets,
  no norm-to-orig table), and its rewritten `bpe_model.cc` keeps value-type heap entries,
  heapifies the initial pairs, compares scores as integers and skips the reserved-piece map.
  0.1.97 (Debian) and 0.2.0/0.2.1 have neither.
- 0.2.3's C++ cannot be built by `make setup` from PyPI/Debian sources: its CMake fetches
  abseil/protobuf with git (no network), and Debian's abseil (20220623) lacks `absl/log`. The
  binding exports only `PyInit__sentencepiece`, so its C++ cannot be linked either. Driving the
  binding from Python threads gives 1.54x on 2 threads (DESIGN.md §4b) and still builds a Python
  list per document, at the binding's ~1.2 M tokens/s per core at best.
- So: an exact BPE encoder of our own for the models we use (BPE, identity normalization, byte
  fallback: Llama 2 and Code Llama). It applies 0.2.3's merges in 0.2.3's order (highest score,
  leftmost first) and adds three exact speed-ups (csrc/spm_bpe.h): word cuts where no piece can
  span plus a per-thread word cache, merges looked up by (left id, right id), and a scan instead
  of a heap for short words. Its ids are checked against the binding id for id by
  tests/data/test_tokenizer_parity.py (stdlib sources, CJK, emoji, accented Latin, bytes needing
  byte fallback, user-defined pieces, no-byte-fallback models, both merge loops, cache eviction)
  and on every load against a built-in sample (`FastEncoder.self_check`). Models outside that
  scope (Unigram, NFKC, ...) raise `UnsupportedModel` and `megacode.tokenizer` falls back to the
  binding.
"""

from __future__ import annotations

import os
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

    def encode_jsonl(
        self, data: bytes, keys: Sequence[str], meta_keys: Sequence[str] = (), dummy_prefix: bool = True,
        prefix_id=None, suffix_id=None,
    ) -> Tuple[np.ndarray, List[np.ndarray], List[np.ndarray], np.ndarray]:
        """JSONL lines -> (status uint8 [lines], tokens int32 per key, lengths int64 per key,
        meta int64 [kept lines, len(meta_keys), 2]).

        status: 0 kept (the arrays hold the kept lines in order), 1 blank, 2 left to Python's
        json to judge (csrc/jsonl_scan.h says which lines those are). meta: where each metadata
        key's JSON value sits in `data`, [begin, end), or -1 -1 when the line has no such key."""
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        return self._enc.encode_jsonl(
            data, list(keys), list(meta_keys), dummy_prefix,
            self._check_id("prefix_id", prefix_id), self._check_id("suffix_id", suffix_id),
        )

    def encode_files(
        self, root: str, paths: Sequence[str], dummy_prefix: bool = True, prefix_id=None, suffix_id=None
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Files under `root`, one document each -> (status uint8 [files], sizes int64 [files],
        tokens int32, lengths int64 [kept files]). status 0: encoded; 2: unreadable, empty or not
        UTF-8, left to Python to judge. sizes: bytes read, -1 for an unreadable file."""
        return self._enc.encode_files(
            os.fspath(root), [os.fspath(p) for p in paths], dummy_prefix,
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

"""`Tokenizer`: a SentencePiece model (Llama 2 / Code Llama tokenizer.model) with infilling pieces.

Decoding, piece lookups and the special ids come from the SentencePiece binding; encoding goes
through the C++ core (megacode/tokenizer/fast.py) when the model is in its scope, else through
the binding. Both give the same ids (tests/data/test_tokenizer_parity.py).

Special tokens are inserted by id, never by text (DESIGN.md §1): `encode` never maps "<s>" or
"▁<PRE>" typed in the text to those ids' special meaning beyond what SentencePiece itself does.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2

from megacode.tokenizer.codellama import INFILL_PIECES

BACKENDS = ("auto", "megacode", "sentencepiece")


def _optional_id(value: int) -> Optional[int]:
    return None if value < 0 else int(value)


class Tokenizer:
    """Wraps one SentencePiece model file.

    Attributes: model_path, vocab_size, bos_id, eos_id, unk_id, pad_id (None: no pad piece, as in
    Llama 2), pre_id / suf_id / mid_id / eot_id (the Code Llama infilling pieces ▁<PRE> ▁<SUF>
    ▁<MID> ▁<EOT>; None when the model has none), backend ("megacode" or "sentencepiece") and
    backend_note (why the binding is used, when it is).
    """

    def __init__(self, model_path: str, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.model_path = os.path.abspath(os.fspath(model_path))
        self._requested_backend = backend
        try:
            with open(self.model_path, "rb") as f:
                serialized = f.read()
        except OSError as e:
            raise FileNotFoundError(f"tokenizer model {self.model_path}: {e.strerror}") from None
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(serialized)
        except (RuntimeError, OSError) as e:
            raise ValueError(f"{self.model_path} is not a SentencePiece model: {e}") from None
        self._serialized = serialized
        self._sp_infill_cache = None

        self.vocab_size = self._sp.vocab_size()
        self.bos_id = _optional_id(self._sp.bos_id())
        self.eos_id = _optional_id(self._sp.eos_id())
        self.unk_id = _optional_id(self._sp.unk_id())
        self.pad_id = _optional_id(self._sp.pad_id())
        self.pre_id, self.suf_id, self.mid_id, self.eot_id = (self._find_piece(p) for p in INFILL_PIECES)
        self._fast = None
        self.backend, self.backend_note = "sentencepiece", ""
        if backend != "sentencepiece":
            self._init_fast(serialized, required=backend == "megacode")

    def _init_fast(self, serialized: bytes, required: bool) -> None:
        from megacode.tokenizer.fast import FastEncoder, UnsupportedModel

        try:
            fast = FastEncoder(serialized, self.vocab_size)
        except UnsupportedModel as e:
            if required:
                raise ValueError(f"{self.model_path}: the C++ encoder cannot encode this model: {e}") from None
            self.backend_note = f"C++ encoder out of scope ({e}); using the sentencepiece binding"
            return
        fast.self_check(self._sp)
        self._fast, self.backend = fast, "megacode"

    @property
    def _sp_infill(self) -> spm.SentencePieceProcessor:
        """enc' from the binding: the same model without the dummy prefix (built on first use)."""
        if self._sp_infill_cache is None:
            proto = model_pb2.ModelProto()
            proto.ParseFromString(self._serialized)
            proto.normalizer_spec.add_dummy_prefix = False
            sp = spm.SentencePieceProcessor()
            sp.LoadFromSerializedProto(proto.SerializeToString())
            self._sp_infill_cache = sp
        return self._sp_infill_cache

    def _find_piece(self, piece: str) -> Optional[int]:
        i = self._sp.piece_to_id(piece)
        return i if self._sp.id_to_piece(i) == piece else None

    @property
    def has_infill(self) -> bool:
        return None not in (self.pre_id, self.suf_id, self.mid_id, self.eot_id)

    # Encoding ---------------------------------------------------------------------------------

    def _ends(self, bos: bool, eos: bool) -> Tuple[Optional[int], Optional[int]]:
        if bos and self.bos_id is None:
            raise ValueError(f"{self.model_path} has no BOS piece")
        if eos and self.eos_id is None:
            raise ValueError(f"{self.model_path} has no EOS piece")
        return (self.bos_id if bos else None), (self.eos_id if eos else None)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> List[int]:
        """SentencePiece's ids for `text` (with the implicit leading "▁"), BOS/EOS added by id."""
        first, last = self._ends(bos, eos)
        if self._fast is not None:
            return self._fast.encode(text, True, first, last)
        ids = self._sp.encode(text)
        return ([first] if bos else []) + ids + ([last] if eos else [])

    def encode_infill(self, text: str) -> List[int]:
        """enc'(text): no implicit leading "▁" (Code Llama infilling, DESIGN.md §1).

        Equals Meta's `encode("☺" + text)[2:]` whenever "☺" is a piece that merges with nothing,
        as in Llama 2 (tests/data/test_tokenizer.py checks both on a model where that holds).
        """
        if self._fast is not None:
            return self._fast.encode(text, False)
        return self._sp_infill.encode(text)

    def encode_batch(
        self, texts: Sequence[str], bos: bool = False, eos: bool = False, num_threads: int = 1, infill: bool = False
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Many texts at once: (tokens [sum(lengths)] int32, lengths [len(texts)] int64).

        The C++ path encodes on `num_threads` threads with the GIL released.
        """
        first, last = self._ends(bos, eos)
        if self._fast is not None:
            return self._fast.encode_batch(texts, num_threads, not infill, first, last)
        sp = self._sp_infill if infill else self._sp
        docs = sp.encode(list(texts), num_threads=num_threads)
        docs = [([first] if bos else []) + d + ([last] if eos else []) for d in docs]
        lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        flat = np.fromiter((t for d in docs for t in d), dtype=np.int32, count=int(lengths.sum()))
        return flat, lengths

    def encode_jsonl(
        self, data: bytes, keys: Sequence[str], bos: bool = False, eos: bool = False, meta_keys: Sequence[str] = ()
    ) -> Optional[Tuple[np.ndarray, List[np.ndarray], List[np.ndarray], np.ndarray]]:
        """The C++ JSONL fast path (megacode/tokenizer/fast.py `encode_jsonl`): the requested keys'
        strings of every plain line encoded without Python objects; None with the binding backend."""
        if self._fast is None:
            return None
        first, last = self._ends(bos, eos)
        return self._fast.encode_jsonl(data, keys, meta_keys, True, first, last)

    def encode_files(
        self, root: str, paths: Sequence[str], bos: bool = False, eos: bool = False
    ) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """The C++ source-file path (megacode/tokenizer/fast.py `encode_files`): files read,
        checked and encoded with the GIL released; None with the binding backend."""
        if self._fast is None:
            return None
        first, last = self._ends(bos, eos)
        return self._fast.encode_files(root, paths, True, first, last)

    # Decoding and pieces ----------------------------------------------------------------------

    def _check_ids(self, ids) -> List[int]:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode(self._check_ids(ids))

    def decode_infill(self, ids: Sequence[int]) -> str:
        """Inverse of encode_infill: keeps a leading space (Meta's decode_infilling)."""
        return self._sp_infill.decode(self._check_ids(ids))

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(self._check_ids([i])[0])

    def piece_to_id(self, piece: str) -> Optional[int]:
        return self._find_piece(piece)

    def __getstate__(self) -> dict:  # worker processes reload from the file
        return {"model_path": self.model_path, "backend": self._requested_backend}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model_path"], state["backend"])

    def __repr__(self) -> str:
        return f"Tokenizer({self.model_path!r}, vocab_size={self.vocab_size}, backend={self.backend!r})"

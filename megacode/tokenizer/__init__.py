"""Tokenizer: Llama 2 / Code Llama SentencePiece models, encoded by an exact C++ core.

    tok = megacode.tokenizer.load("tokenizer.model")
    tok.encode(text, bos=False, eos=False) -> list[int]     # SentencePiece's ids
    tok.encode_infill(text) -> list[int]                     # enc': no implicit leading space
    tok.encode_batch(texts, eos=True, num_threads=4)         # (tokens int32, lengths int64)
    tok.decode(ids), tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id,
    tok.pre_id / suf_id / mid_id / eot_id (None without infilling pieces), tok.model_path

C++ code (e.g. FIM) loads the same file with csrc/spm_bpe.h from `tok.model_path`.
The choice of SentencePiece core and its figures: megacode/tokenizer/fast.py.
"""

from megacode.tokenizer.codellama import (
    CODELLAMA_EXTRA_PIECES,
    INFILL_PIECES,
    build_codellama_tokenizer,
    extend_with_infill_pieces,
    infill_ids,
)
from megacode.tokenizer.model import Tokenizer


def load(model_path, backend: str = "auto") -> Tokenizer:
    """Load a SentencePiece model. backend: "auto" (C++ core when in scope, else the binding),
    "megacode" (C++ core or an error) or "sentencepiece" (the PyPI binding)."""
    return Tokenizer(model_path, backend)


__all__ = [
    "CODELLAMA_EXTRA_PIECES",
    "INFILL_PIECES",
    "Tokenizer",
    "build_codellama_tokenizer",
    "extend_with_infill_pieces",
    "infill_ids",
    "load",
]

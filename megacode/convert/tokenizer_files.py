"""The tokenizer half of a Hugging Face export: SentencePiece model → the files `AutoTokenizer`
loads, as Code Llama's Hugging Face releases lay them out.

    tokenizer.model           the SentencePiece model itself (sentencepiece / slow tokenizers)
    tokenizer_config.json     tokenizer_class CodeLlamaTokenizer (or LlamaTokenizer without the
                              infilling pieces, as for 34B) with the prefix/middle/suffix/eot tokens
    special_tokens_map.json   <s>, </s>, <unk> and the infilling pieces as additional specials
    tokenizer.json            the fast tokenizer, converted by transformers itself

`CodeLlamaTokenizer` builds infilling prompts from `prefix<FILL_ME>suffix` with the pieces named
in tokenizer_config.json; those names are looked up by text there, so the tokenizer must hold
them as whole pieces (`megacode.tokenizer.codellama` appends them as Code Llama does).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from megacode.convert.common import ConvertError

FILL_TOKEN = "<FILL_ME>"
# Prompt text that a converted fast tokenizer must encode exactly as SentencePiece does.
SELF_CHECK_TEXT = "def add(a, b):\n    return a + b  # sum of 2 numbers\n\tprint('done')"


@dataclass(frozen=True)
class TokenizerInfo:
    vocab_size: int
    bos_id: Optional[int]
    eos_id: Optional[int]
    infill: bool


def _piece(tok, index: Optional[int]) -> Optional[str]:
    return None if index is None else tok.id_to_piece(index)


def write_hf_tokenizer(model_path: Path, out_dir: Path, vocab_size: int, max_length: int) -> TokenizerInfo:
    """Write the four tokenizer files for a model of `vocab_size` rows into `out_dir`."""
    from megacode.tokenizer import load

    try:
        tok = load(model_path, backend="sentencepiece")
    except (FileNotFoundError, ValueError) as err:
        raise ConvertError(str(err)) from None
    if tok.vocab_size != vocab_size:
        raise ConvertError(f"tokenizer {model_path} has {tok.vocab_size} pieces but the model's vocabulary is "
                           f"{vocab_size}; pass the tokenizer the run trained with (--tokenizer-model)")
    shutil.copyfile(model_path, out_dir / "tokenizer.model")
    specials = {"bos_token": _piece(tok, tok.bos_id), "eos_token": _piece(tok, tok.eos_id),
                "unk_token": _piece(tok, tok.unk_id)}
    specials = {k: v for k, v in specials.items() if v is not None}
    config = {"tokenizer_class": "CodeLlamaTokenizer" if tok.has_infill else "LlamaTokenizer",
              **specials, "pad_token": None, "add_bos_token": True, "add_eos_token": False,
              "clean_up_tokenization_spaces": False, "legacy": None, "model_max_length": max_length,
              "sp_model_kwargs": {}}
    special_map = dict(specials)
    if tok.has_infill:
        infill = {"prefix_token": _piece(tok, tok.pre_id), "middle_token": _piece(tok, tok.mid_id),
                  "suffix_token": _piece(tok, tok.suf_id), "eot_token": _piece(tok, tok.eot_id)}
        config.update(infill, fill_token=FILL_TOKEN)
        special_map["additional_special_tokens"] = list(infill.values())
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, ensure_ascii=False) + "\n")
    _write_fast_tokenizer(out_dir, tok)
    return TokenizerInfo(tok.vocab_size, tok.bos_id, tok.eos_id, tok.has_infill)


def _write_fast_tokenizer(out_dir: Path, tok) -> None:
    """tokenizer.json from transformers' own SentencePiece conversion, checked against SentencePiece."""
    from transformers import AutoTokenizer

    fast = AutoTokenizer.from_pretrained(str(out_dir))
    want = tok.encode(SELF_CHECK_TEXT, bos=tok.bos_id is not None)
    got = fast(SELF_CHECK_TEXT)["input_ids"]
    if got != want:
        raise ConvertError(f"transformers' conversion of {tok.model_path} encodes the self-check text as {got[:12]}..., "
                           f"SentencePiece as {want[:12]}...")
    fast.backend_tokenizer.save(str(out_dir / "tokenizer.json"))

"""Code Llama infilling (FIM, arXiv 2308.12950 §2.3): training layouts, inference prompts, <EOT>.

    tok = megacode.tokenizer.load("tokenizer.model")          # a Code Llama tokenizer (▁<PRE> ...)
    fim_tokens(tok, text, lo, hi, spm)   -> ids of one transformed document (C++, as the loader)
    infill_prompt(tok, prefix, suffix, spm) -> prompt ids (Meta's `infilling_prompt_tokens`)
    cut_at_eot(tok, ids) / infill_text(tok, ids) -> a generation cut at <EOT> (ids / text)

Layouts, with enc' = encoding without SentencePiece's implicit leading space (DESIGN.md §1):

    training PSM  <PRE> enc(prefix) <SUF> enc'(suffix) <MID> enc'(middle) <EOT>
    training SPM  <PRE> <SUF> enc'(suffix) <MID> enc(prefix + middle) <EOT>
    prompt   PSM  <s> <PRE> enc(prefix) <SUF> enc'(suffix) <MID>
    prompt   SPM  <s> <PRE> <SUF> enc'(suffix) <MID> enc(prefix)

The prompts are those of Meta's codellama `llama/generation.py` (`infilling_prompt_tokens`:
BOS first, the suffix through `encode_infilling`); generation stops at <EOT> and the middle is
decoded without the implicit space (`decode_infilling`). Special tokens go in by id, never as text.

Text from stored ids: the datasets hold ids, so a document's text is `decode(ids)`. For the
byte-fallback, identity-normalized Llama models decode(encode(t)) == t, except that a literal
"▁" (U+2581) in t comes back as a space (SentencePiece escapes spaces to it when encoding, so the
stored ids already say space); the transform works on decode(ids) and parts decode back to it.
Ids that do not decode losslessly (<unk> without byte fallback, BOS/EOS or other control pieces
inside a document, byte pieces that are not valid UTF-8: ids not made by encoding text) leave
the document as stored; a leading BOS and trailing EOS frame it and stay around the layout.

The training transform runs in C++ (csrc/fim.cpp: decoding the stored ids, the random choices,
the layouts, and the BPE core of csrc/spm_bpe.h, GIL released); `megacode.data.fim_dataset`
applies it to packed samples. This module also marks FIM parts for tools/inspect_data.py.
"""

from __future__ import annotations

import threading
from typing import Dict, List, Sequence, Tuple

import numpy as np

from megacode.data.sample_view import Marker, register_part_marker

STAT_NAMES = ("eligible", "transformed", "spm", "unclean", "tokens_in", "tokens_out", "dropped", "continued",
              "whole_cut")
"""Counters csrc/fim.cpp returns per sample: whole documents seen, transformed, laid out SPM, left
as stored because their ids do not decode to text losslessly; tokens of the transformed
documents before and after; tokens dropped to keep the sample at seq_length + 1, tokens read
past the sample's end to fill it; whole documents the packing shortened."""


def require_infill(tok, what: str = "FIM") -> None:
    """ValueError naming the model file unless `tok` has the four infilling pieces."""
    if tok is None or not hasattr(tok, "has_infill"):
        raise TypeError(f"{what} needs a megacode.tokenizer.Tokenizer, got {tok!r}")
    if not tok.has_infill:
        raise ValueError(f"{what} needs a Code Llama tokenizer with the infilling pieces ▁<PRE> ▁<SUF> ▁<MID> "
                         f"▁<EOT>; {tok.model_path} has none of them or not all (build one with "
                         f"tools/build_codellama_tokenizer.py; the 34B flavor has no infilling)")


# The C++ transform, one per tokenizer file (its encoder's word caches are worth sharing). -------

_CORES: Dict[Tuple, object] = {}
_CORES_LOCK = threading.Lock()


def fim_core(tok):
    """The `megacode._fim.Fim` for `tok`'s model file and special ids (built once, shared)."""
    require_infill(tok)
    key = (tok.model_path, tok.pre_id, tok.suf_id, tok.mid_id, tok.eot_id, tok.bos_id, tok.eos_id)
    with _CORES_LOCK:
        core = _CORES.get(key)
        if core is None:
            from megacode import _fim

            with open(tok.model_path, "rb") as f:
                serialized = f.read()
            none = -1
            try:
                core = _fim.Fim(serialized, tok.pre_id, tok.suf_id, tok.mid_id, tok.eot_id,
                                none if tok.bos_id is None else tok.bos_id, none if tok.eos_id is None else tok.eos_id)
            except ValueError as e:
                raise ValueError(f"{tok.model_path}: FIM runs on megacode's C++ BPE core, which cannot encode "
                                 f"this model ({e})") from None
            if core.vocab_size != tok.vocab_size:
                raise RuntimeError(f"{tok.model_path}: C++ core read {core.vocab_size} pieces, "
                                   f"SentencePiece {tok.vocab_size}")
            _CORES[key] = core
    return core


def fim_tokens(tok, text: str, lo: int, hi: int, spm: bool) -> List[int]:
    """The transformed ids of one document `text` split at code points `lo <= hi` (prefix
    text[:lo], middle text[lo:hi], suffix text[hi:]), through the loader's C++ path. No BOS/EOS."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    lo, hi = int(lo), int(hi)
    if not 0 <= lo <= hi <= len(text):
        raise ValueError(f"split points must satisfy 0 <= lo <= hi <= len(text) = {len(text)}, got lo={lo}, hi={hi}")
    return fim_core(tok).fim_text(text, lo, hi, bool(spm)).tolist()


def decode_document(tok, ids) -> str | None:
    """A document's text as the transform sees it (SentencePiece's decoding), or None when its
    ids do not decode losslessly (control/unknown pieces, invalid byte runs): such documents are
    never transformed."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    return fim_core(tok).decode(ids)


# Inference ------------------------------------------------------------------------------------

def infill_prompt(tok, prefix: str, suffix: str, spm: bool) -> List[int]:
    """Prompt ids for infilling between `prefix` and `suffix`, as Meta's `infilling_prompt_tokens`:
    PSM `<s> <PRE> enc(prefix) <SUF> enc'(suffix) <MID>`, SPM `<s> <PRE> <SUF> enc'(suffix) <MID> enc(prefix)`."""
    require_infill(tok, "an infilling prompt")
    if tok.bos_id is None:
        raise ValueError(f"an infilling prompt starts with BOS; {tok.model_path} has no BOS piece")
    if not isinstance(prefix, str) or not isinstance(suffix, str):
        raise TypeError(f"prefix and suffix must be str, got {type(prefix).__name__}, {type(suffix).__name__}")
    if spm:
        return ([tok.bos_id, tok.pre_id, tok.suf_id] + tok.encode_infill(suffix) + [tok.mid_id]
                + tok.encode(prefix))
    return ([tok.bos_id, tok.pre_id] + tok.encode(prefix) + [tok.suf_id] + tok.encode_infill(suffix)
            + [tok.mid_id])


def cut_at_eot(tok, ids: Sequence[int]) -> List[int]:
    """Generated ids up to (not including) the first <EOT>; all of them when there is none."""
    require_infill(tok, "cutting at <EOT>")
    ids = [int(i) for i in ids]
    return ids[:ids.index(tok.eot_id)] if tok.eot_id in ids else ids


def infill_text(tok, generated: Sequence[int]) -> str:
    """The infilled middle as text: cut at <EOT>, decoded without dropping a leading space
    (Meta's `decode_infilling`), so `prefix + infill_text(...) + suffix` is the whole program."""
    return tok.decode_infill(cut_at_eot(tok, generated))


# tools/inspect_data.py: FIM parts marked in a sample's decoded text ------------------------------

def fim_markers(ids: np.ndarray, tokenizer) -> List[Marker]:
    """Labels at each part's special token (which decodes as <PRE>, <SUF>, ...): ⟦FIM PSM⟧ or
    ⟦FIM SPM⟧ at <PRE>, ⟦suffix⟧, ⟦middle⟧ (PSM) or ⟦prefix+middle⟧ (SPM), ⟦end of middle⟧.
    PSM with an empty prefix starts <PRE> <SUF> like SPM: then both are named."""
    if tokenizer is None or not getattr(tokenizer, "has_infill", False):
        return []
    ids = np.asarray(ids)
    pre, suf, mid = tokenizer.pre_id, tokenizer.suf_id, tokenizer.mid_id
    names = {pre: "", suf: "⟦suffix⟧", mid: "", tokenizer.eot_id: "⟦end of middle⟧"}
    out, spm = [], False
    for p in np.flatnonzero(np.isin(ids, list(names))):
        t = int(ids[p])
        if t == pre:
            spm = p + 1 < len(ids) and int(ids[p + 1]) == suf
            out.append((int(p), "⟦FIM SPM, or PSM with an empty prefix⟧" if spm else "⟦FIM PSM: prefix⟧"))
        elif t == mid:
            out.append((int(p), "⟦prefix+middle (SPM) or middle⟧" if spm else "⟦middle⟧"))
        else:
            out.append((int(p), names[t]))
    return out


register_part_marker(fim_markers)

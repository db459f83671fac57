"""A training sample laid open for people (tools/inspect_data.py): ids, pieces, decoded text, markers.

    view = view_sample(dataset, i, tokenizer)      # ids [s+1], pieces, markers
    print(render(view, tokenizer))

Markers are (position, label) pairs: `label` is shown just before token `position` of the
decoded text. Document starts (from the sample's pieces) and EOS tokens are marked here. Other
parts register a marker function with `register_part_marker` — the hook for FIM, whose
transform will mark its ▁<PRE> ▁<SUF> ▁<MID> ▁<EOT> sections the same way:

    def fim_markers(ids, tokenizer) -> list[tuple[int, str]]: ...
    register_part_marker(fim_markers)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np

from megacode.data.provenance import Piece, sample_pieces, sample_tokens

Marker = Tuple[int, str]
MarkerFn = Callable[[np.ndarray, object], List[Marker]]


def eos_markers(ids: np.ndarray, tokenizer) -> List[Marker]:
    """⟦EOS⟧ at every end-of-document token (its id comes from the tokenizer)."""
    eos = getattr(tokenizer, "eos_id", None)
    if eos is None:
        return []
    return [(int(p), "⟦EOS⟧") for p in np.flatnonzero(ids == eos)]


def out_of_range_markers(ids: np.ndarray, tokenizer) -> List[Marker]:
    """Ids the tokenizer cannot decode (a dataset made with another vocabulary)."""
    vocab = getattr(tokenizer, "vocab_size", None)
    if vocab is None:
        return []
    return [(int(p), f"⟦id {int(ids[p])} outside the tokenizer's {vocab}⟧") for p in np.flatnonzero((ids < 0) | (ids >= vocab))]


PART_MARKERS: List[MarkerFn] = [eos_markers, out_of_range_markers]


def register_part_marker(fn: MarkerFn) -> None:
    """Add a marker function (ids, tokenizer) -> [(position, label)] applied to every viewed sample."""
    if fn not in PART_MARKERS:
        PART_MARKERS.append(fn)


@dataclass
class SampleView:
    index: int
    ids: np.ndarray  # [s+1] int64
    pieces: Optional[List[Piece]]  # None: no documents (synthetic stream)
    markers: List[Marker] = field(default_factory=list)  # sorted by position
    loss_mask: Optional[np.ndarray] = None  # [s+1], when the sample carries one


def document_markers(pieces: Optional[List[Piece]]) -> List[Marker]:
    """⟦doc D @offset⟧ where each piece (a document, or the rest of one) starts."""
    out, position = [], 0
    for piece in pieces or []:
        out.append((position, f"⟦doc {piece.document} @{piece.start}⟧"))
        position += piece.length
    return out


def view_sample(dataset, i: int, tokenizer=None) -> SampleView:
    sample = dataset[i]
    ids = np.asarray(sample_tokens(sample), dtype=np.int64)
    mask = np.asarray(sample["loss_mask"]) if isinstance(sample, dict) and "loss_mask" in sample else None
    pieces = sample_pieces(dataset, i)
    markers = document_markers(pieces)
    for fn in PART_MARKERS:
        markers += fn(ids, tokenizer)
    markers.sort(key=lambda m: m[0])  # stable: document start before an EOS at the same position
    return SampleView(int(i), ids, pieces, markers, mask)


def decode_with_markers(ids: np.ndarray, markers: List[Marker], tokenizer) -> str:
    """Decoded text with each marker inserted before its token; EOS itself decodes to nothing."""
    cuts = sorted({p for p, _ in markers} | {0, len(ids)})
    labels = {}
    for position, label in markers:
        labels.setdefault(position, []).append(label)
    eos, vocab = getattr(tokenizer, "eos_id", None), tokenizer.vocab_size
    parts = []
    for start, end in zip(cuts[:-1], cuts[1:]):
        parts.extend(labels.get(start, []))
        segment = [int(t) for t in ids[start:end] if int(t) != eos and 0 <= int(t) < vocab]
        if segment:
            parts.append(tokenizer.decode(segment))
    parts.extend(labels.get(len(ids), []))
    return "".join(parts)


def render(view: SampleView, tokenizer=None, header: str = "") -> str:
    lines = [f"=== sample {view.index}{header} ==="]
    if view.pieces is None:
        lines.append("pieces: (none: synthetic stream, no documents)")
    else:
        lines.append(f"pieces ({len(view.pieces)}):")
        position = 0
        for piece in view.pieces:
            lines.append(f"  sample tokens [{position}, {position + piece.length})  component {piece.component}  "
                         f"{piece.prefix}  document {piece.document}  tokens [{piece.start}, {piece.end})")
            position += piece.length
    lines.append(f"ids ({len(view.ids)}): {' '.join(str(int(t)) for t in view.ids)}")
    if view.loss_mask is not None:
        lines.append(f"loss mask: {int(np.count_nonzero(view.loss_mask))} of {len(view.loss_mask)} tokens")
    if tokenizer is None:
        lines.append("text: (no tokenizer: pass --tokenizer-model or set data.tokenizer_model to decode)")
    else:
        lines.append("text:")
        lines.append(decode_with_markers(view.ids, view.markers, tokenizer))
    return "\n".join(lines)

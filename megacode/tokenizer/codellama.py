"""Build Code Llama's 32,016-piece tokenizer from Llama 2's 32,000-piece one.

Code Llama appends 16 pieces to Llama 2's vocabulary (ids 32000-32015, as listed in Code Llama's
tokenizer.json / tokenizer.model):

    32000 ▁<SU   32001 ▁<SUF   32002 ▁<PRE   32003 ▁<M   32004 ▁<MID   32005 ▁<E   32006 ▁<EOT
    32007 ▁<PRE>  32008 ▁<SUF>  32009 ▁<MID>  32010 ▁<EOT>                (the infilling pieces)
    32011 ▁<EOT><EOT>  ...  32015 ▁<EOT>x6

The partial strings (▁<SU, ▁<SUF, ...) are the BPE merge chain that leads to each full piece, so
all 16 are ordinary (NORMAL) BPE pieces. We append them as NORMAL pieces scored below every
existing merge, in that order: text that does not literally contain them tokenizes exactly as
with Llama 2, and the training data path inserts them by id only (DESIGN.md §1).

Generalised for small test models: the 16 pieces go to base+0 .. base+15, so the infilling
pieces land at base+7 .. base+10. A base that is not 32,000 pieces is refused unless
`allow_non_llama_base` is set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

LLAMA2_VOCAB_SIZE = 32000
CODELLAMA_EXTRA_PIECES = (
    "▁<SU", "▁<SUF", "▁<PRE", "▁<M", "▁<MID", "▁<E", "▁<EOT",
    "▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>",
    "▁<EOT><EOT>", "▁<EOT><EOT><EOT>", "▁<EOT><EOT><EOT><EOT>",
    "▁<EOT><EOT><EOT><EOT><EOT>", "▁<EOT><EOT><EOT><EOT><EOT><EOT>",
)
INFILL_PIECES = ("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>")  # prefix, suffix, middle, end of infill
INFILL_OFFSETS = {p: CODELLAMA_EXTRA_PIECES.index(p) for p in INFILL_PIECES}  # 7, 8, 9, 10


def extend_with_infill_pieces(serialized: bytes, allow_non_llama_base: bool = False, source: str = "model") -> bytes:
    """Return the serialized ModelProto with Code Llama's 16 pieces appended."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    try:
        proto.ParseFromString(serialized)
    except Exception as e:  # protobuf raises DecodeError; anything else is as bad
        raise ValueError(f"{source}: not a SentencePiece model ({e})") from None
    base = len(proto.pieces)
    if base == 0:
        raise ValueError(f"{source}: the model has no pieces")
    if proto.trainer_spec.model_type != model_pb2.TrainerSpec.BPE:
        raise ValueError(f"{source}: Code Llama extends a BPE model; this one is "
                         f"{model_pb2.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)}")
    existing = {p.piece: i for i, p in enumerate(proto.pieces)}
    clashes = {p: existing[p] for p in CODELLAMA_EXTRA_PIECES if p in existing}
    if clashes:
        raise ValueError(f"{source}: already has {clashes} (is it a Code Llama tokenizer already?)")
    if base != LLAMA2_VOCAB_SIZE and not allow_non_llama_base:
        raise ValueError(
            f"{source}: has {base} pieces, Llama 2's tokenizer has {LLAMA2_VOCAB_SIZE}; "
            "pass allow_non_llama_base (--allow-non-llama-base) to extend another base model"
        )
    normal = [p.score for p in proto.pieces if p.type == model_pb2.ModelProto.SentencePiece.NORMAL]
    lowest = min(normal) if normal else 0.0
    for k, piece in enumerate(CODELLAMA_EXTRA_PIECES):
        new = proto.pieces.add()
        new.piece = piece
        new.score = lowest - 1.0 - k  # below every existing merge, in Code Llama's order
        new.type = model_pb2.ModelProto.SentencePiece.NORMAL
    proto.trainer_spec.vocab_size = len(proto.pieces)
    return proto.SerializeToString()


def infill_ids(base_vocab_size: int) -> Dict[str, int]:
    """Where the infilling pieces land when appended to a base of `base_vocab_size` pieces."""
    return {p: base_vocab_size + off for p, off in INFILL_OFFSETS.items()}


def build_codellama_tokenizer(input_path, output_path, allow_non_llama_base: bool = False) -> Path:
    """Write the extended model to `output_path` (atomically) and check the ids by loading it."""
    import sentencepiece as spm

    input_path, output_path = Path(input_path), Path(output_path)
    try:
        serialized = input_path.read_bytes()
    except OSError as e:
        raise FileNotFoundError(f"{input_path}: {e.strerror}") from None
    extended = extend_with_infill_pieces(serialized, allow_non_llama_base, source=str(input_path))
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(extended)
    base = sp.vocab_size() - len(CODELLAMA_EXTRA_PIECES)
    for piece, want in infill_ids(base).items():
        got = sp.piece_to_id(piece)
        if got != want:
            raise RuntimeError(f"{piece} landed at id {got}, expected {want}")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(f"{output_path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(extended)
    os.replace(tmp, output_path)
    return output_path

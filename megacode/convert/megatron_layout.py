"""The Megatron side of the mapping: megacode's checkpoint keys, their global shapes, and the
chunks a TP-sharded save stores.

Keys are GPTModel's `sharded_state_dict` keys with the local spec's renames (DESIGN.md §2 and
`megacode/models/specs.py`): the norms live under `linear_qkv.layer_norm_weight` and
`linear_fc1.layer_norm_weight`, as in Transformer Engine's fused modules. Per-layer tensors are
stacked on a leading layer axis with the global layer number, so the stored tensors — and the
chunk boundaries inside one layer — depend on TP only; PP and virtual stages only decide which
rank saves which layer. Each chunk below is exactly what TP rank r writes for one layer:

    key                                      global shape        TP rank r stores (per layer l)
    embedding.word_embeddings.weight         [Vp, h]             rows r·Vp/tp ...
    decoder.layers...linear_qkv.weight       [L, (n+2g)·d, h]    rows r·(n+2g)·d/tp ...   (its groups)
    decoder.layers...linear_proj.weight      [L, h, n·d]         columns r·n·d/tp ...
    decoder.layers...linear_fc1.weight       [L, 2f, h]          gate rows r·f/tp ... and up rows f + r·f/tp ...
    decoder.layers...linear_fc2.weight       [L, h, f]           columns r·f/tp ...
    decoder.layers...layer_norm_weight (×2)  [L, h]              whole row (replicated; rank 0 writes)
    decoder.final_layernorm.weight           [h]
    output_layer.weight                      [Vp, h]             rows r·Vp/tp ...

(n heads, g KV groups, d head dim, f FFN size, Vp the padded vocabulary.) The local spec's
linears also save an empty `_extra_state` object per layer, which a load expects to find.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import torch

from megacode.convert.hf_layout import ModelShape

EMBED = "embedding.word_embeddings.weight"
OUTPUT = "output_layer.weight"
FINAL_NORM = "decoder.final_layernorm.weight"
QKV = "decoder.layers.self_attention.linear_qkv.weight"
PROJ = "decoder.layers.self_attention.linear_proj.weight"
FC1 = "decoder.layers.mlp.linear_fc1.weight"
FC2 = "decoder.layers.mlp.linear_fc2.weight"
ATTN_NORM = "decoder.layers.self_attention.linear_qkv.layer_norm_weight"
MLP_NORM = "decoder.layers.mlp.linear_fc1.layer_norm_weight"
LAYER_KEYS = (QKV, PROJ, FC1, FC2, ATTN_NORM, MLP_NORM)
MODEL_KEYS = (EMBED,) + LAYER_KEYS + (FINAL_NORM, OUTPUT)
EXTRA_STATE_MODULES = ("self_attention.linear_qkv", "self_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2")


def extra_state_key(module: str, layer: int, num_layers: int) -> str:
    """A ShardedObject's unique key: `{key}/shard_{offset}_{global shape}` (one axis: layers)."""
    return f"decoder.layers.{module}._extra_state/shard_{layer}_{num_layers}"


def extra_state_bytes() -> bytes:
    """What Megatron stores for one sharded object: `torch.save` of the list of its data (None)."""
    buffer = io.BytesIO()
    torch.save([None], buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class Chunk:
    key: str
    layer: Optional[int]
    """Global layer number for `decoder.layers.*` keys, else None."""
    tp_rank: int
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    part: str = ""
    """`gate` or `up` for the two halves of `linear_fc1`."""


@dataclass(frozen=True)
class MegatronShape:
    model: ModelShape
    padded_vocab: int

    def global_shapes(self) -> dict[str, tuple[int, ...]]:
        m = self.model
        L, h, f, d = m.num_layers, m.hidden_size, m.ffn_hidden_size, m.head_dim
        return {
            EMBED: (self.padded_vocab, h),
            QKV: (L, m.qkv_rows, h),
            PROJ: (L, h, m.num_heads * d),
            FC1: (L, 2 * f, h),
            FC2: (L, h, f),
            ATTN_NORM: (L, h),
            MLP_NORM: (L, h),
            FINAL_NORM: (h,),
            OUTPUT: (self.padded_vocab, h),
        }

    def check_tp(self, tp: int) -> None:
        m = self.model
        for what, size in (("KV groups", m.num_groups), ("FFN size", m.ffn_hidden_size),
                           ("padded vocabulary", self.padded_vocab)):
            if size % tp:
                raise ValueError(f"{what} {size} is not divisible by TP={tp}")

    def chunks(self, key: str, tp: int) -> list[Chunk]:
        """The chunks of `key` a save at tensor-parallel size `tp` stores, layer-major."""
        self.check_tp(tp)
        shape = self.global_shapes()[key]
        if key in (EMBED, OUTPUT):
            rows = shape[0] // tp
            return [Chunk(key, None, r, (r * rows, 0), (rows, shape[1])) for r in range(tp)]
        if key == FINAL_NORM:
            return [Chunk(key, None, 0, (0,), shape)]
        out = []
        for layer in range(shape[0]):
            if key in (ATTN_NORM, MLP_NORM):
                out.append(Chunk(key, layer, 0, (layer, 0), (1, shape[1])))
                continue
            for r in range(tp):
                if key == QKV:
                    rows = shape[1] // tp
                    out.append(Chunk(key, layer, r, (layer, r * rows, 0), (1, rows, shape[2])))
                elif key in (PROJ, FC2):
                    cols = shape[2] // tp
                    out.append(Chunk(key, layer, r, (layer, 0, r * cols), (1, shape[1], cols)))
                elif key == FC1:
                    ffn, rows = shape[1] // 2, shape[1] // 2 // tp
                    out.append(Chunk(key, layer, r, (layer, r * rows, 0), (1, rows, shape[2]), "gate"))
                    out.append(Chunk(key, layer, r, (layer, ffn + r * rows, 0), (1, rows, shape[2]), "up"))
        return out

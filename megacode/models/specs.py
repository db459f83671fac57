"""Layer specs: which modules implement the Llama layer (DESIGN.md §7: backends from specs).

The model code (`llama.py`) describes the architecture only. With Transformer Engine and CUDA
present (and `model.attention_backend: auto`), Megatron-Core's TE spec supplies fused
norm+linear, fused attention and FP8-capable kernels; otherwise the local spec below uses
Megatron-Core's tensor-parallel linears, our sequence-parallel-capable RMSNorm and, as core
attention, PyTorch's scaled_dot_product_attention (`attention.py`; flash kernels, no s x s
scores) or Megatron-Core's unfused `DotProductAttention` (`attention_backend: unfused`). The
specs share checkpoint keys (the keys map below mirrors TE's fused
`linear_qkv.layer_norm_weight`; core attention has no weights), so a checkpoint moves between
them.
"""

from __future__ import annotations

import importlib.util

import torch
from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.attention import SelfAttention, SelfAttentionSubmodules
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.identity_op import IdentityOp
from megatron.core.transformer.mlp import MLP, MLPSubmodules
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules

from megacode.models.attention import SDPAttention
from megacode.models.rmsnorm import RMSNorm


def te_available() -> bool:
    """Transformer Engine importable and a GPU to run it on."""
    return torch.cuda.is_available() and importlib.util.find_spec("transformer_engine") is not None


def resolve_attention(requested: str, te: bool) -> str:
    """The core attention a run uses: 'te' (the TE spec), 'sdpa' or 'unfused' (the local spec).
    `requested` is model.attention_backend; `te` whether TE and CUDA are present."""
    if requested == "auto":
        return "te" if te else "sdpa"
    return requested


def local_layer_spec(attention: str = "sdpa") -> ModuleSpec:
    """Llama layer from Megatron-Core modules only: runs on CPU and on GPU without TE. Core
    attention is Megatron's DotProductAttention for `attention="unfused"`, SDPA otherwise."""
    core_attention = DotProductAttention if attention == "unfused" else SDPAttention
    return ModuleSpec(
        module=TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=RMSNorm,
            self_attention=ModuleSpec(
                module=SelfAttention,
                params={"attn_mask_type": AttnMaskType.causal},
                submodules=SelfAttentionSubmodules(
                    linear_qkv=ColumnParallelLinear,
                    core_attention=core_attention,
                    linear_proj=RowParallelLinear,
                    q_layernorm=IdentityOp,
                    k_layernorm=IdentityOp,
                ),
            ),
            self_attn_bda=get_bias_dropout_add,
            pre_mlp_layernorm=RMSNorm,
            mlp=ModuleSpec(module=MLP, submodules=MLPSubmodules(
                linear_fc1=ColumnParallelLinear, linear_fc2=RowParallelLinear)),
            mlp_bda=get_bias_dropout_add,
            sharded_state_dict_keys_map={
                "input_layernorm.": "self_attention.linear_qkv.layer_norm_",
                "pre_mlp_layernorm.": "mlp.linear_fc1.layer_norm_",
            },
        ),
    )


def decoder_block_spec(config: TransformerConfig, use_te: bool, vp_stage: int | None = None,
                       attention: str = "sdpa") -> TransformerBlockSubmodules:
    """The layers this pipeline stage (and virtual stage) builds, plus the final norm; the local
    spec's core attention is `attention` (see `local_layer_spec`)."""
    if use_te:
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec

        return get_gpt_decoder_block_spec(config, use_transformer_engine=True, vp_stage=vp_stage)
    num_layers = get_num_layers_to_build(config, vp_stage=vp_stage)
    return TransformerBlockSubmodules(layer_specs=[local_layer_spec(attention)] * num_layers, layer_norm=RMSNorm)

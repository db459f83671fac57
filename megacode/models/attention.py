"""Core attention through PyTorch's `scaled_dot_product_attention` for the local layer spec.

Megatron-Core's `DotProductAttention` (the local spec's default in Megatron) multiplies Q by K
into a `[b, np, sq, sk]` score buffer, softmaxes it and multiplies by V: at seq 4096 and 32
heads that is 2 GiB per micro-batch in BF16 for one layer, written and read again in backward.
`scaled_dot_product_attention` dispatches to FlashAttention-2 / memory-efficient kernels on
CUDA (and a flash kernel on CPU) that never form the score matrix, and with `enable_gqa` reads
each K/V group once for all the query heads that share it instead of repeating K/V in memory.

`SDPAttention` is a drop-in for `DotProductAttention` as `SelfAttention` builds and calls it:
the same constructor and forward signatures, per-TP-partition shapes in and out, the same
softmax scale, causal masking, mask convention and dropout RNG. It has no parameters, so a
checkpoint moves between it, `DotProductAttention` and Transformer Engine's attention. What
it does not do (packed sequences, attention bias, context parallelism, sliding windows,
softmax variants) it refuses by name rather than computing something else.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.utils import is_layer_window_attention
from megatron.core.utils import divide, is_torch_min_version

# `enable_gqa` (torch >= 2.5) lets the kernel map query head i to K/V group i // (np / ng),
# Megatron's grouping (DotProductAttention repeat_interleaves K/V along heads), with no copy.
# On CUDA the flash (and cuDNN) kernels take it, the memory-efficient one does not: where flash
# cannot run (fp32, an explicit mask) K/V are repeated so that the memory-efficient kernel, not
# the math one with its s x s scores, is chosen.
SDPA_HAS_GQA = is_torch_min_version("2.5.0a0")
FLASH_DTYPES = (torch.float16, torch.bfloat16)


class SDPAttention(MegatronModule):
    """`DotProductAttention`'s contract computed by `F.scaled_dot_product_attention`.

    query `[sq, b, np, hn]`, key/value `[sk, b, ng, hn]` (this TP rank's heads and groups)
    -> context `[sq, b, np * hn]`.
    """

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: Optional[float] = None,
        softmax_scale: Optional[float] = None,
        cp_comm_type: Optional[str] = None,
        pg_collection: Optional[ProcessGroupCollection] = None,
    ):
        super().__init__(config=config)
        self.config: TransformerConfig = config
        if config.context_parallel_size != 1:
            raise ValueError(f"SDPAttention supports context_parallel_size=1 only, got "
                             f"{config.context_parallel_size}: use Transformer Engine's attention")
        if config.softmax_type != "vanilla":
            raise ValueError(f"SDPAttention computes the vanilla softmax only, got softmax_type="
                             f"{config.softmax_type!r}")
        if is_layer_window_attention(config.window_size, config.window_attn_skip_freq, layer_number):
            raise ValueError(f"SDPAttention has no sliding-window attention (window_size="
                             f"{config.window_size} at layer {layer_number})")
        self.layer_number = max(1, layer_number)
        self.attn_mask_type = attn_mask_type
        self.attention_type = attention_type

        if pg_collection is None:
            pg_collection = ProcessGroupCollection.use_mpu_process_groups(required_pgs=["tp"])
        self.pg_collection = pg_collection
        self.tp_group = pg_collection.tp
        world_size = pg_collection.tp.size()
        projection_size = config.kv_channels * config.num_attention_heads
        self.hidden_size_per_partition = divide(projection_size, world_size)
        self.hidden_size_per_attention_head = divide(projection_size, config.num_attention_heads)
        self.num_attention_heads_per_partition = divide(config.num_attention_heads, world_size)
        self.num_query_groups_per_partition = divide(config.num_query_groups, world_size)

        # DotProductAttention divides its scale by the layer number under
        # apply_query_key_layer_scaling and multiplies the scores back in fp32 before the
        # softmax (an fp16 overflow guard): the net scale is this one, which SDPA applies in fp32.
        self.softmax_scale = (1.0 / math.sqrt(self.hidden_size_per_attention_head)
                              if softmax_scale is None else softmax_scale)
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        attn_mask_type: Optional[AttnMaskType] = None,
        attention_bias: Optional[torch.Tensor] = None,
        packed_seq_params: Optional[PackedSeqParams] = None,
    ) -> torch.Tensor:
        if packed_seq_params is not None:
            raise ValueError("SDPAttention does not take packed sequences (packed_seq_params): "
                             "use Transformer Engine's attention (the TE spec)")
        if attention_bias is not None:
            raise ValueError("SDPAttention does not take an attention_bias")
        sq, b, np_, hn = query.shape
        sk, ng = key.size(0), key.size(2)
        if np_ % ng != 0:
            raise ValueError(f"query heads per partition ({np_}) must be a multiple of K/V groups ({ng})")
        mask_type = self.attn_mask_type if attn_mask_type is None else attn_mask_type

        # [sq, b, np, hn] -> [b, np, sq, hn]: a view; the kernels take strided inputs whose
        # last dimension is contiguous.
        q = query.permute(1, 2, 0, 3)
        k = key.permute(1, 2, 0, 3)  # [b, ng, sk, hn]
        v = value.permute(1, 2, 0, 3)

        # Masking follows DotProductAttention's PyTorch path: a given mask (bool, True = masked
        # out, broadcastable to [b, np, sq, sk]) is the mask; without one, causal attention masks
        # the future (sq == sk; a single query, as in decoding, sees every key).
        attn_mask, is_causal = None, False
        if attention_mask is not None:
            if attention_mask.dtype != torch.bool:
                raise ValueError(f"SDPAttention takes a boolean attention_mask (True = masked out), "
                                 f"got {attention_mask.dtype}")
            attn_mask = ~attention_mask  # SDPA's boolean mask marks the positions that take part
        elif mask_type == AttnMaskType.causal and sq > 1:
            if sq != sk:
                raise ValueError(f"causal attention without a mask needs sq == sk, got sq={sq}, sk={sk}")
            is_causal = True

        extra = {}
        if np_ != ng:
            if SDPA_HAS_GQA and (not q.is_cuda or (attn_mask is None and q.dtype in FLASH_DTYPES)):
                extra["enable_gqa"] = True
            else:  # [b, ng, sk, hn] -> [b, np, sk, hn]: K/V per query head, still no s x s tensor
                k = k.repeat_interleave(np_ // ng, dim=1)
                v = v.repeat_interleave(np_ // ng, dim=1)

        dropout_p = self.dropout_p if self.training else 0.0
        # Dropout draws from the model-parallel RNG (TP ranks hold different heads and must drop
        # independently), forked exactly when DotProductAttention forks it.
        rng = (tensor_parallel.get_cuda_rng_tracker().fork()
               if dropout_p > 0 and not self.config.sequence_parallel else contextlib.nullcontext())
        with rng:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                                     is_causal=is_causal, scale=self.softmax_scale, **extra)
        # [b, np, sq, hn] -> [sq, b, np, hn] -> [sq, b, np * hn]
        context = context.permute(2, 0, 1, 3).contiguous()
        return context.view(sq, b, np_ * hn)

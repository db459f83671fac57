"""Llama 2 / Code Llama on Megatron-Core's GPTModel.

Architecture (DESIGN.md §2): pre-norm RMSNorm (eps 1e-5), SwiGLU MLP (`linear_fc1` = [gate; up]),
rotary embeddings (rotate-half, base θ configurable), grouped-query attention, no biases,
untied input embedding and output layer. Which kernels implement it comes from `specs.py`,
which fusion switches are on from `fusions.py`.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer import TransformerConfig

from megacode.config import ConfigError, Layout, RunConfig, model_shape, rope_base
from megacode.models.fusions import Availability, Fusions, choose_fusions
from megacode.models.specs import decoder_block_spec, resolve_attention, te_available

log = logging.getLogger("megacode")

# model.fp8_recipe -> TransformerConfig.fp8 (the FP8 format): per-tensor recipes keep E5M2's
# range for gradients; block scales do not need it (TE's default for blockwise is E4M3).
FP8_FORMAT = {"delayed": "hybrid", "tensorwise": "hybrid", "blockwise": "e4m3"}


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Round the vocabulary up to a multiple of `divisible_by`, independent of TP.

    Megatron-LM pads to a multiple of divisible_by × TP, so the embedding shape changes with
    TP and a checkpoint cannot move between TP sizes; a TP-independent padding keeps every
    layout's tensors the same shape. 32,016 → 32,128, which TP 2/4/8/16/32/64/128 divide.
    """
    padded = -(-vocab_size // divisible_by) * divisible_by
    if padded % tp != 0:
        raise ConfigError(f"padded vocabulary {padded} (vocab {vocab_size} rounded to a multiple of "
                          f"model.make_vocab_size_divisible_by={divisible_by}) is not divisible by parallel.tp={tp}")
    return padded


def run_fusions(cfg: RunConfig, dtype: torch.dtype, available: Optional[Availability] = None) -> Fusions:
    """The fusion switches for this run on this machine (`available`: detected when None)."""
    available = Availability.detect() if available is None else available
    attention = resolve_attention(cfg.model.attention_backend, available.te)
    return choose_fusions(available, attention, bf16=dtype == torch.bfloat16)


def fp8_kwargs(cfg: RunConfig) -> dict:
    """TransformerConfig's FP8 fields for model.fp8 / model.fp8_recipe (empty without FP8)."""
    if not cfg.model.fp8:
        return {}
    return {"fp8": FP8_FORMAT[cfg.model.fp8_recipe], "fp8_recipe": cfg.model.fp8_recipe}


def transformer_config(cfg: RunConfig, layout: Layout, params_dtype: Optional[torch.dtype] = None,
                       use_cpu_initialization: Optional[bool] = None,
                       available: Optional[Availability] = None) -> TransformerConfig:
    """Megatron TransformerConfig for the run's model shape at this layout (BF16 on GPU, FP32 on
    CPU), with the fusions this machine's kernels allow (`available`: detected when None)."""
    shape = model_shape(cfg)
    on_gpu = torch.cuda.is_available()
    dtype = params_dtype or (torch.bfloat16 if on_gpu else torch.float32)
    return TransformerConfig(
        num_layers=layout.num_layers,
        hidden_size=shape.hidden_size,
        num_attention_heads=shape.num_attention_heads,
        num_query_groups=shape.num_query_groups,
        ffn_hidden_size=shape.ffn_hidden_size,
        kv_channels=shape.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=shape.norm_epsilon,
        gated_linear_unit=True,  # SwiGLU: silu(gate) * up
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=cfg.model.init_method_std,
        tensor_model_parallel_size=layout.tp,
        pipeline_model_parallel_size=layout.pp,
        virtual_pipeline_model_parallel_size=layout.vp,
        sequence_parallel=cfg.parallel.sequence_parallel,
        # Full recompute keeps one layer's input per layer (Megatron's "uniform" method, 1 layer a chunk).
        recompute_granularity=None if cfg.parallel.recompute == "none" else cfg.parallel.recompute,
        recompute_method="uniform" if cfg.parallel.recompute == "full" else None,
        recompute_num_layers=1 if cfg.parallel.recompute == "full" else None,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        # Loss is summed over tokens and divided by the global token count once, so micro-batch
        # and DP splits of one global batch give the same gradient (and masked losses are exact).
        calculate_per_token_loss=True,
        use_cpu_initialization=not on_gpu if use_cpu_initialization is None else use_cpu_initialization,
        deallocate_pipeline_outputs=True,
        # gloo matches point-to-point messages between two ranks in posting order (tag 0): in a
        # batched exchange with PP=2 and virtual stages, where the previous and next stage are
        # the same peer, an activation and a gradient of equal shape can swap. The unbatched
        # path orders sends/receives by rank parity and splits the two directions.
        batch_p2p_comm=on_gpu,
        **run_fusions(cfg, dtype, available).kwargs,
        **fp8_kwargs(cfg),
    )


def build_model_chunk(cfg: RunConfig, config: TransformerConfig, vp_stage: Optional[int],
                      pre_process: bool, post_process: bool, use_te: bool) -> GPTModel:
    shape = model_shape(cfg)
    vocab = shape.vocab_size
    padded = padded_vocab_size(vocab, cfg.model.make_vocab_size_divisible_by, config.tensor_model_parallel_size)
    model = GPTModel(
        config=config,
        transformer_layer_spec=decoder_block_spec(config, use_te, vp_stage=vp_stage,
                                                  attention=cfg.model.attention_backend),
        vocab_size=padded,
        max_sequence_length=cfg.data.seq_length,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=False,
        position_embedding_type="rope",
        rotary_percent=1.0,
        rotary_base=rope_base(cfg, shape),
        vp_stage=vp_stage,
    )
    if post_process and padded > vocab:
        model.output_layer.register_forward_hook(_mask_padded_vocab(vocab, padded // config.tensor_model_parallel_size))
    return model


def _mask_padded_vocab(vocab: int, rows_per_rank: int):
    """Padding rows are not tokens: their logits are set to -inf so they take no probability
    mass (the loss equals a model of the true vocabulary, as the exported HF model computes)."""

    def hook(module, inputs, output):
        logits, bias = output  # logits: [s, b, vocab/tp], this TP rank's slice of the vocabulary
        start = parallel_state.get_tensor_model_parallel_rank() * rows_per_rank
        first_pad = vocab - start
        if first_pad >= rows_per_rank:
            return output
        mask = torch.arange(rows_per_rank, device=logits.device) >= max(first_pad, 0)
        return logits.masked_fill(mask, float("-inf")), bias

    return hook


def build_model(cfg: RunConfig, layout: Layout, use_te: Optional[bool] = None) -> list[GPTModel]:
    """This rank's model chunks (one per virtual pipeline stage), on its device, not yet wrapped.
    Logs (rank 0) which core attention and fusions the run uses."""
    if use_te is None:
        use_te = resolve_attention(cfg.model.attention_backend, te_available()) == "te"
    if cfg.model.fp8 and not use_te:
        raise ConfigError("model.fp8=true needs the Transformer Engine spec (TE importable and CUDA), "
                          f"which this run does not use (CUDA available: {torch.cuda.is_available()})")
    config = transformer_config(cfg, layout)
    log.info("%s", run_fusions(cfg, config.params_dtype).description)
    chunks = []
    for vp_stage in range(layout.vp or 1):
        stage = vp_stage if layout.vp else None
        chunk = build_model_chunk(
            cfg, config, stage,
            pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage),
            post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage),
            use_te=use_te)
        if torch.cuda.is_available():
            chunk.cuda(torch.cuda.current_device())
        chunks.append(chunk)
    return chunks

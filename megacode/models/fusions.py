"""Megatron-Core's fusion switches, decided once from what this machine has.

Every switch below is a `TransformerConfig` (or `ModelParallelConfig`) field whose kernel lives
in a different place, and a switch on without its kernel fails at build or at the first step:

| switch | kernel (Megatron-Core 0.16.1) | needs |
|---|---|---|
| gradient_accumulation_fusion | weight-gradient GEMM accumulating into `main_grad`: apex's `fused_weight_gradient_mlp_cuda` in Megatron's linears; TE linears use TE's own | CUDA + apex: GPTModel's output layer is Megatron's `ColumnParallelLinear` in every spec, and it refuses to build without apex's kernel |
| bias_activation_fusion | `fused_bias_swiglu`: SwiGLU with a recompute-in-backward autograd function (no bias: its bias-free variant), compiled by `jit_fuser` (torch.compile) | CUDA |
| bias_dropout_fusion | `fused_bias_dropout`: dropout + residual add, torch.compile | CUDA |
| cross_entropy_loss_fusion | `fused_cross_entropy` (impl `native`): vocab-parallel cross entropy, torch.compile; its backward casts the logit gradient to bf16 | CUDA + bf16 |
| apply_rope_fusion | TE's fused RoPE (`TransformerConfig` refuses it without TE) | CUDA + TE |
| masked_softmax_fusion | apex's `scaled_(upper_triang_)masked_softmax_cuda`, read only by the unfused `DotProductAttention` (SDPA and TE attention fuse the softmax themselves) | CUDA + apex + unfused attention |
| persist_layer_norm | apex's persistent LayerNorm | never here: the Llama norms are RMSNorm (ours in the local spec, TE's fused norm+linear in the TE spec), which do not read it |

On CPU every switch stays off, so the CPU path is numerically what it was. `choose_fusions` is
a pure function of an `Availability`, so each machine kind is unit-tested on CPU.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import torch

from megacode.models.specs import te_available

APEX_SOFTMAX_MODULES = ("scaled_masked_softmax_cuda", "scaled_upper_triang_masked_softmax_cuda")


@dataclass(frozen=True)
class Availability:
    """What the fused kernels need, as found on this machine (`detect`) or given (tests)."""

    cuda: bool
    te: bool = False
    """Transformer Engine importable with CUDA: the TE layer spec is used (`specs.te_available`)."""
    te_rope: bool = False
    """Megatron-Core imported TE's fused RoPE (`rope_utils.fused_apply_rotary_pos_emb`)."""
    apex_wgrad: bool = False
    """apex's `fused_weight_gradient_mlp_cuda` imported (Megatron's own flag for it)."""
    apex_softmax: bool = False
    """apex's fused causal/masked softmax extensions import."""

    @classmethod
    def detect(cls) -> "Availability":
        from megatron.core.models.common.embeddings import rope_utils
        from megatron.core.tensor_parallel import layers

        return cls(cuda=torch.cuda.is_available(), te=te_available(),
                   te_rope=rope_utils.fused_apply_rotary_pos_emb is not None,
                   apex_wgrad=bool(layers._grad_accum_fusion_available),
                   apex_softmax=all(_imports(name) for name in APEX_SOFTMAX_MODULES))


@dataclass(frozen=True)
class Fusions:
    """The switches for TransformerConfig and one line naming each, on or off, and why."""

    kwargs: dict = field(default_factory=dict)
    description: str = ""


def choose_fusions(available: Availability, attention: str, bf16: bool) -> Fusions:
    """Every fusion switch for a run whose core attention is `attention` ('te', 'sdpa' or
    'unfused', `specs.resolve_attention`) and whose weights are bf16 or not."""
    cuda = available.cuda
    no_cuda = "no CUDA"
    choices = [  # (switch, on, why)
        ("gradient_accumulation_fusion", cuda and available.apex_wgrad,
         no_cuda if not cuda else "apex fused_weight_gradient_mlp_cuda" if available.apex_wgrad
         else "needs apex's fused_weight_gradient_mlp_cuda: Megatron's output layer calls it even with TE"),
        ("bias_activation_fusion", cuda, "SwiGLU, torch.compile" if cuda else no_cuda),
        ("bias_dropout_fusion", cuda, "residual add, torch.compile" if cuda else no_cuda),
        ("cross_entropy_loss_fusion", cuda and bf16,
         no_cuda if not cuda else "native, torch.compile" if bf16 else "its backward casts to bf16: bf16 only"),
        ("apply_rope_fusion", cuda and available.te_rope,
         no_cuda if not cuda else "TE fused RoPE" if available.te_rope else "needs Transformer Engine"),
        _masked_softmax(available, attention),
        ("persist_layer_norm", False, "n/a: apex LayerNorm only, the norms are RMSNorm"),
    ]
    kwargs = {name: bool(on) for name, on, _ in choices}
    if kwargs["cross_entropy_loss_fusion"]:
        kwargs["cross_entropy_fusion_impl"] = "native"
    described = ", ".join(f"{name}={'on' if on else 'off'} ({why})" for name, on, why in choices)
    return Fusions(kwargs=kwargs, description=f"fusions: {described}; core attention: {attention}")


def _masked_softmax(available: Availability, attention: str) -> tuple:
    name = "masked_softmax_fusion"
    if not available.cuda:
        return name, False, "no CUDA"
    if attention != "unfused":
        return name, False, f"unused: {attention} attention fuses its softmax"
    if not available.apex_softmax:
        return name, False, "needs apex's scaled_masked_softmax_cuda"
    return name, True, "apex fused softmax"


def _imports(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True

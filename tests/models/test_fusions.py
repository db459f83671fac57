"""Fusion switches per machine kind (megacode/models/fusions.py), decided from an Availability
given here, and built into a real TransformerConfig; model.fp8_recipe and
model.attention_backend mapped and validated. CPU only, in-process (no Megatron state)."""

import pytest
import torch

from megacode.config import ConfigError, load_config, resolve_layout
from megacode.models.fusions import Availability, choose_fusions
from megacode.models.llama import transformer_config
from tests.training.launch import TINY_CONFIG

SWITCHES = ("gradient_accumulation_fusion", "bias_activation_fusion", "bias_dropout_fusion",
            "cross_entropy_loss_fusion", "apply_rope_fusion", "masked_softmax_fusion", "persist_layer_norm")

CPU = Availability(cuda=False)
CUDA_NO_TE = Availability(cuda=True)
CUDA_NO_TE_APEX = Availability(cuda=True, apex_wgrad=True, apex_softmax=True)
TE_CUDA = Availability(cuda=True, te=True, te_rope=True)
TE_CUDA_APEX = Availability(cuda=True, te=True, te_rope=True, apex_wgrad=True, apex_softmax=True)


def tiny(*overrides):
    cfg = load_config(TINY_CONFIG, ["parallel.tp=1", "parallel.pp=1", *overrides])
    return cfg, resolve_layout(cfg, 1)


@pytest.fixture
def te_rope_kernel(monkeypatch):
    """TransformerConfig refuses apply_rope_fusion unless Megatron imported TE's fused RoPE:
    stand in for that import, as on a TE machine."""
    from megatron.core.models.common.embeddings import rope_utils

    monkeypatch.setattr(rope_utils, "fused_apply_rotary_pos_emb", lambda *args, **kwargs: None)


def on(config) -> set:
    return {name for name in SWITCHES if getattr(config, name)}


def test_cpu_turns_every_fusion_off_and_keeps_the_cpu_path():
    fusions = choose_fusions(CPU, "sdpa", bf16=False)
    assert fusions.kwargs == dict.fromkeys(SWITCHES, False)
    for name in SWITCHES:
        assert f"{name}=off (" in fusions.description
    assert fusions.description.startswith("fusions: ") and fusions.description.count("(no CUDA)") == 6
    cfg, layout = tiny()
    assert on(transformer_config(cfg, layout, available=CPU)) == set()
    # This machine: what detect() finds gives the same (CPU) switches.
    assert Availability.detect().cuda == torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert on(transformer_config(cfg, layout)) == set()


def test_cuda_without_te_enables_megatrons_pytorch_fusions():
    cfg, layout = tiny()
    config = transformer_config(cfg, layout, params_dtype=torch.bfloat16, available=CUDA_NO_TE)
    assert on(config) == {"bias_activation_fusion", "bias_dropout_fusion", "cross_entropy_loss_fusion"}
    assert config.cross_entropy_fusion_impl == "native"
    description = choose_fusions(CUDA_NO_TE, "sdpa", bf16=True).description
    assert "apply_rope_fusion=off (needs Transformer Engine)" in description
    assert "masked_softmax_fusion=off (unused: sdpa attention fuses its softmax)" in description
    assert "gradient_accumulation_fusion=off (needs apex's fused_weight_gradient_mlp_cuda" in description
    # fp32 weights on CUDA: the fused cross entropy's backward would round gradients to bf16.
    assert not transformer_config(cfg, layout, params_dtype=torch.float32,
                                  available=CUDA_NO_TE).cross_entropy_loss_fusion


def test_cuda_with_apex_and_unfused_attention_adds_wgrad_and_softmax_fusions():
    cfg, layout = tiny("model.attention_backend=unfused")
    config = transformer_config(cfg, layout, params_dtype=torch.bfloat16, available=CUDA_NO_TE_APEX)
    assert on(config) == {"gradient_accumulation_fusion", "bias_activation_fusion", "bias_dropout_fusion",
                          "cross_entropy_loss_fusion", "masked_softmax_fusion"}
    # The same machine without apex's softmax kernels: Megatron would import them at the first step.
    assert not choose_fusions(CUDA_NO_TE, "unfused", bf16=True).kwargs["masked_softmax_fusion"]


def test_te_and_cuda_enable_rope_fusion(te_rope_kernel):
    cfg, layout = tiny()
    config = transformer_config(cfg, layout, params_dtype=torch.bfloat16, available=TE_CUDA)
    assert on(config) == {"bias_activation_fusion", "bias_dropout_fusion", "cross_entropy_loss_fusion",
                          "apply_rope_fusion"}
    config = transformer_config(cfg, layout, params_dtype=torch.bfloat16, available=TE_CUDA_APEX)
    assert on(config) == {"gradient_accumulation_fusion", "bias_activation_fusion", "bias_dropout_fusion",
                          "cross_entropy_loss_fusion", "apply_rope_fusion"}
    description = choose_fusions(TE_CUDA_APEX, "te", bf16=True).description
    assert "masked_softmax_fusion=off (unused: te attention fuses its softmax)" in description
    assert "persist_layer_norm=off (n/a" in description and description.endswith("core attention: te")


def test_rope_fusion_needs_the_te_kernel_that_availability_reports():
    """Without TE, TransformerConfig itself refuses the switch: the availability gate matters."""
    cfg, layout = tiny()
    with pytest.raises(ValueError, match="apply_rope_fusion is not available"):
        transformer_config(cfg, layout, params_dtype=torch.bfloat16, available=TE_CUDA)


def test_attention_backend_auto_is_te_only_with_te():
    from megacode.models.specs import resolve_attention

    assert choose_fusions(CPU, "sdpa", False).description.endswith("core attention: sdpa")
    assert resolve_attention("auto", te=True) == "te" and resolve_attention("auto", te=False) == "sdpa"
    assert resolve_attention("sdpa", te=True) == "sdpa" and resolve_attention("unfused", te=True) == "unfused"


@pytest.mark.parametrize("recipe, fp8_format", [("delayed", "hybrid"), ("tensorwise", "hybrid"),
                                                ("blockwise", "e4m3")])
def test_fp8_recipe_reaches_transformer_config(recipe, fp8_format):
    cfg, layout = tiny("model.fp8=true", f"model.fp8_recipe={recipe}")
    config = transformer_config(cfg, layout)
    assert (config.fp8, config.fp8_recipe) == (fp8_format, recipe)
    cfg, layout = tiny(f"model.fp8_recipe={recipe}")  # the recipe alone does not turn FP8 on
    assert transformer_config(cfg, layout).fp8 is None


@pytest.mark.parametrize("overrides, message", [
    (["model.fp8_recipe=mxfp8"], "model.fp8_recipe must be one of delayed, tensorwise, blockwise, got 'mxfp8'"),
    (["model.attention_backend=flash"], "model.attention_backend must be one of auto, sdpa, unfused, got 'flash'"),
    (["model.fp8=true", "model.attention_backend=sdpa"],
     "model.fp8=true needs the Transformer Engine spec (model.attention_backend=auto), "
     "got model.attention_backend='sdpa'"),
])
def test_bad_model_values_fail_with_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        tiny(*overrides)
    assert message in str(err.value)

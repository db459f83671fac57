"""SDPA core attention (megacode/models/attention.py) is Megatron-Core's DotProductAttention
computed without the score matrix: fp32 on CPU, forward and gradients within 1e-5, causal,
GQA/MHA/MQA; the whole tiny model gives the same loss and gradients with either backend and the
same checkpoint keys; the CUDA-without-TE fusions run in the local spec. One worker process
(it owns Megatron's global state) computes everything; the tests read its JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def worker():
    proc = subprocess.run([sys.executable, str(HERE / "attention_worker.py")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["gqa 8/2", "mha 4/4", "mqa 6/1", "gqa softmax_scale 0.1", "gqa given mask",
                                  "gqa repeated k/v"])
def test_sdpa_equals_dot_product_attention(worker, case):
    result = worker["core"][case]
    assert result["shape"] == result["ref_shape"]  # [sq, b, np * hn]
    assert result["scale"] > 1.0  # outputs and gradients of a real size, not near zero
    for name, diff in result["max_abs"].items():
        assert diff < 1e-5, (case, name, diff)


def test_dropout_uses_the_model_parallel_rng(worker):
    dropout = worker["dropout"]
    assert dropout["same_seed_equal"] and dropout["other_seed_differs"]
    assert dropout["train_differs_from_eval"] > 0.1
    assert dropout["eval_vs_reference"] < 1e-5


def test_unsupported_inputs_are_refused_by_name(worker):
    refused = worker["refused"]
    assert "packed sequences (packed_seq_params)" in refused["packed"]
    assert "attention_bias" in refused["bias"]
    assert "boolean attention_mask" in refused["float_mask"] and "torch.float32" in refused["float_mask"]
    assert refused["causal_sq_ne_sk"] == "causal attention without a mask needs sq == sk, got sq=4, sk=8"
    assert "sliding-window" in refused["window"] and "(16, 0)" in refused["window"]
    assert refused["fp8_without_te"].startswith("model.fp8=true needs the Transformer Engine spec")


def test_whole_model_same_loss_grads_and_checkpoint_keys(worker):
    model = worker["model"]
    assert model["unfused_core"] == ["DotProductAttention"] and model["sdpa_core"] == ["SDPAttention"]
    assert model["sdpa"] == pytest.approx(model["unfused"], abs=1e-6)
    assert model["max_abs"] < 1e-6 and model["max_grad"] > 1e-3
    assert model["sharded_keys_equal"] and model["sharded_keys"] > 0 and model["state_dict_keys_equal"]


def test_cuda_fusions_without_te_run_in_the_local_spec(worker):
    """bias_activation (SwiGLU, no bias), bias_dropout and native cross-entropy fusion: Megatron's
    kernels run (counted) and agree with the unfused model; the fused cross entropy's backward
    rounds the logit gradient to bf16, hence the gradient tolerance."""
    fused = worker["fused"]
    on = {name for name, value in fused["chosen"].items() if value is True}
    assert on == {"bias_activation_fusion", "bias_dropout_fusion", "cross_entropy_loss_fusion"}
    assert fused["calls"] == {"swiglu": 4, "bias_dropout_add": 8, "cross_entropy": 1}  # 4 layers, 1 loss
    assert fused["loss_fused"] == pytest.approx(fused["loss_plain"], abs=1e-6)
    assert fused["max_abs"] < 1e-2 * fused["max_grad"]

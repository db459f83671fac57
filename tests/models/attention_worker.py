"""Worker of test_attention.py (own process: it owns a world of one and Megatron's state).

fp32 on CPU. Prints one JSON object:
- `core`: SDPAttention against Megatron-Core's DotProductAttention per case (GQA, MHA, MQA, a
  given softmax scale, a given boolean mask, K/V repeated instead of `enable_gqa`): max |difference| of the output and of the
  gradients w.r.t. q, k, v for one random output gradient;
- `dropout`: dropout is drawn from the model-parallel RNG and off in eval;
- `refused`: the messages of what SDPAttention refuses;
- `model`: the tiny GPTModel built from one seed with attention_backend sdpa and unfused: loss,
  gradient differences, the core attention classes, and the checkpoint keys of both;
- `fused`: the same model with the fusions chosen for CUDA without TE (bf16), run eagerly
  (torch.compile off: compiling on CPU takes a minute), against the unfused-switch model.
"""

import dataclasses
import json
import sys
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from megatron.core import parallel_state, tensor_parallel  # noqa: E402
from megatron.core.packed_seq_params import PackedSeqParams  # noqa: E402
from megatron.core.transformer import TransformerConfig  # noqa: E402
from megatron.core.transformer.dot_product_attention import DotProductAttention  # noqa: E402
from megatron.core.transformer.enums import AttnMaskType  # noqa: E402

from megacode.config import ConfigError, load_config, resolve_layout  # noqa: E402
from megacode.models import attention  # noqa: E402
from megacode.models.attention import SDPAttention  # noqa: E402
from megacode.models.fusions import Availability, choose_fusions  # noqa: E402
from megacode.models.llama import build_model, build_model_chunk, transformer_config  # noqa: E402
from megacode.models.params import _single_process_group  # noqa: E402

TINY = REPO / "configs" / "tiny" / "pretrain.yaml"
CASES = [  # name, heads, KV groups, head dim, sq, batch, TransformerConfig extras
    ("gqa 8/2", 8, 2, 16, 64, 2, {}),
    ("mha 4/4", 4, 4, 32, 40, 3, {}),
    ("mqa 6/1", 6, 1, 8, 33, 1, {}),
    ("gqa softmax_scale 0.1", 8, 4, 16, 24, 2, {"softmax_scale": 0.1}),
]


def attention_config(heads, groups, head_dim, **extra) -> TransformerConfig:
    extra = {"attention_dropout": 0.0, **extra}  # TransformerConfig's default is 0.1
    return TransformerConfig(num_layers=1, hidden_size=heads * head_dim, num_attention_heads=heads,
                             num_query_groups=groups, kv_channels=head_dim, params_dtype=torch.float32,
                             use_cpu_initialization=True, **extra)


def build(cls, config):
    return cls(config=config, layer_number=1, attn_mask_type=AttnMaskType.causal, attention_type="self",
               softmax_scale=config.softmax_scale)


def compare_core(heads, groups, head_dim, sq, b, extra, mask=None) -> dict:
    config = attention_config(heads, groups, head_dim, **extra)
    generator = torch.Generator().manual_seed(1000 * heads + sq)
    q = torch.randn(sq, b, heads, head_dim, generator=generator)       # [sq, b, np, hn]
    k = torch.randn(sq, b, groups, head_dim, generator=generator)      # [sk, b, ng, hn]
    v = torch.randn(sq, b, groups, head_dim, generator=generator)
    grad = torch.randn(sq, b, heads * head_dim, generator=generator)   # [sq, b, np * hn]
    outputs = {}
    for cls in (DotProductAttention, SDPAttention):
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        out = build(cls, config)(*inputs, mask, attn_mask_type=AttnMaskType.causal)
        out.backward(grad)
        outputs[cls.__name__] = [out.detach()] + [t.grad for t in inputs]
    ref, ours = outputs["DotProductAttention"], outputs["SDPAttention"]
    return {"shape": list(ours[0].shape), "ref_shape": list(ref[0].shape),
            "max_abs": {name: (a - o).abs().max().item() for name, a, o in zip(("out", "dq", "dk", "dv"), ref, ours)},
            "scale": max(t.abs().max().item() for t in ref)}


def padding_mask(sq: int, b: int) -> torch.Tensor:
    """[b, 1, sq, sq] bool, True = masked: causal, plus the last 5 keys of sequence 0 (key 0 stays
    visible, so no row is fully masked)."""
    mask = torch.triu(torch.ones(sq, sq, dtype=torch.bool), diagonal=1).expand(b, 1, sq, sq).clone()
    mask[0, :, :, -5:] = True
    return mask


def dropout_check() -> dict:
    config = attention_config(4, 2, 16, attention_dropout=0.3)
    generator = torch.Generator().manual_seed(5)
    q = torch.randn(32, 2, 4, 16, generator=generator)
    k, v = torch.randn(2, 32, 2, 2, 16, generator=generator)
    module, reference = build(SDPAttention, config), build(DotProductAttention, config)

    def train_output(seed):
        tensor_parallel.model_parallel_cuda_manual_seed(seed)
        return module.train()(q, k, v, None)

    first, again, other = train_output(7), train_output(7), train_output(8)
    evaluated = module.eval()(q, k, v, None)
    return {"same_seed_equal": torch.equal(first, again), "other_seed_differs": not torch.equal(first, other),
            "train_differs_from_eval": (first - evaluated).abs().max().item(),
            "eval_vs_reference": (evaluated - reference.eval()(q, k, v, None)).abs().max().item()}


def refusals() -> dict:
    def message(fn):
        try:
            fn()
        except (ValueError, ConfigError) as err:
            return str(err)
        return None

    config = attention_config(4, 2, 8)
    module = build(SDPAttention, config)
    q, k = torch.randn(8, 1, 4, 8), torch.randn(8, 1, 2, 8)
    fp8 = load_config(TINY, ["parallel.tp=1", "parallel.pp=1", "model.fp8=true"])
    return {
        "packed": message(lambda: module(q, k, k, None, packed_seq_params=PackedSeqParams(qkv_format="thd"))),
        "bias": message(lambda: module(q, k, k, None, attention_bias=torch.zeros(1, 4, 8, 8))),
        "float_mask": message(lambda: module(q, k, k, torch.zeros(1, 1, 8, 8))),
        "causal_sq_ne_sk": message(lambda: module(q[:4], k, k, None)),
        "window": message(lambda: build(SDPAttention, attention_config(4, 2, 8, window_size=(16, 0)))),
        "fp8_without_te": message(lambda: build_model(fp8, resolve_layout(fp8, 1))),
    }


def tiny_model(backend: str, fusions: dict | None = None):
    # vocab 500 pads to 512: the padding logits are -inf (llama._mask_padded_vocab) in the loss.
    cfg = load_config(TINY, ["parallel.tp=1", "parallel.pp=1", "data.vocab_size=500",
                             f"model.attention_backend={backend}"])
    config = transformer_config(cfg, resolve_layout(cfg, 1))
    if fusions:
        config = dataclasses.replace(config, **fusions)
    torch.manual_seed(0)
    return build_model_chunk(cfg, config, None, True, True, use_te=False).train()


def loss_and_grads(model):
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 500, (2, 64), generator=generator)  # [b, s]
    positions = torch.arange(64).expand(2, 64)
    loss = model(tokens, positions, None, labels=tokens).float().mean()
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}


def grad_difference(grads_a: dict, grads_b: dict) -> dict:
    assert grads_a.keys() == grads_b.keys()
    worst = max((grads_a[k] - grads_b[k]).abs().max().item() for k in grads_a)
    return {"max_abs": worst, "max_grad": max(g.abs().max().item() for g in grads_a.values())}


def whole_model() -> dict:
    results, grads, keys = {}, {}, {}
    for backend in ("unfused", "sdpa"):
        model = tiny_model(backend)
        results[backend], grads[backend] = loss_and_grads(model)
        keys[backend] = sorted(model.sharded_state_dict().keys())
        results[f"{backend}_core"] = sorted({type(layer.self_attention.core_attention).__name__
                                             for layer in model.decoder.layers})
    return {**results, **grad_difference(grads["unfused"], grads["sdpa"]),
            "sharded_keys_equal": keys["unfused"] == keys["sdpa"], "sharded_keys": len(keys["sdpa"]),
            "state_dict_keys_equal": list(tiny_model("unfused").state_dict()) == list(tiny_model("sdpa").state_dict())}


def fused_model() -> dict:
    """The CUDA-without-TE choice (bf16) in the local spec, its kernels counted as they run."""
    from megatron.core.fusions import fused_bias_dropout
    from megatron.core.models.common.language_module import language_module
    from megatron.core.transformer import mlp

    calls = {"swiglu": 0, "bias_dropout_add": 0, "cross_entropy": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    mlp.bias_swiglu_impl = counted("swiglu", mlp.bias_swiglu_impl)
    fused_bias_dropout.bias_dropout_add_fused_train = counted("bias_dropout_add",
                                                              fused_bias_dropout.bias_dropout_add_fused_train)
    language_module.fused_vocab_parallel_cross_entropy = counted(
        "cross_entropy", language_module.fused_vocab_parallel_cross_entropy)
    torch._dynamo.config.disable = True
    chosen = choose_fusions(Availability(cuda=True), "sdpa", bf16=True).kwargs
    loss_fused, grads_fused = loss_and_grads(tiny_model("sdpa", chosen))
    loss_plain, grads_plain = loss_and_grads(tiny_model("sdpa"))
    return {"chosen": chosen, "calls": calls, "loss_fused": loss_fused, "loss_plain": loss_plain,
            **grad_difference(grads_plain, grads_fused)}


def main() -> None:
    _single_process_group()
    parallel_state.initialize_model_parallel(1, 1)
    tensor_parallel.model_parallel_cuda_manual_seed(1)
    core = {name: compare_core(h, g, d, s, b, extra) for name, h, g, d, s, b, extra in CASES}
    core["gqa given mask"] = compare_core(8, 2, 16, 48, 2, {}, mask=padding_mask(48, 2))
    attention.SDPA_HAS_GQA = False  # the path that repeats K/V (torch < 2.5; fp32 or a mask on CUDA)
    core["gqa repeated k/v"] = compare_core(8, 2, 16, 64, 2, {})
    attention.SDPA_HAS_GQA = True
    print(json.dumps({"core": core, "dropout": dropout_check(), "refused": refusals(), "model": whole_model(),
                      "fused": fused_model()}))


if __name__ == "__main__":
    main()

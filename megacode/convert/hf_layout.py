"""The Hugging Face side of the mapping: `LlamaForCausalLM` config.json, tensor names, and the
two places where Megatron's tensors are not HF's (DESIGN.md §2).

- `linear_qkv` holds, per query group, that group's Q heads, then its K head, then its V head:
  rows `[g0: q(qpg·d) k(d) v(d) | g1: ... ]`; HF keeps `q_proj [heads·d, h]`, `k_proj [groups·d, h]`,
  `v_proj [groups·d, h]` separate. TP rank r owns whole groups, so its shard is the same
  interleave of its groups only, and the global tensor is the TP shards concatenated.
- `linear_fc1` is `[gate; up]` (`[2·ffn, h]` globally). Under TP each rank holds `[gate_r; up_r]`;
  Megatron's checkpoint stores the two halves at their global places, so the saved tensor is
  `[gate; up]` whatever the TP.

RoPE is rotate-half in both (no permutation), `rope_theta` is Megatron's `rotary_base`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from megacode.config import CUSTOM, FLAVORS, Flavor
from megacode.convert.common import ConvertError

HF_ARCHITECTURE = "LlamaForCausalLM"
EMBED = "model.embed_tokens.weight"
FINAL_NORM = "model.norm.weight"
LM_HEAD = "lm_head.weight"
# Tensors some Llama checkpoints carry that are not weights (recomputed by every framework).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def layer_names(i: int) -> dict[str, str]:
    p = f"model.layers.{i}."
    return {
        "q": p + "self_attn.q_proj.weight", "k": p + "self_attn.k_proj.weight",
        "v": p + "self_attn.v_proj.weight", "o": p + "self_attn.o_proj.weight",
        "gate": p + "mlp.gate_proj.weight", "up": p + "mlp.up_proj.weight", "down": p + "mlp.down_proj.weight",
        "input_norm": p + "input_layernorm.weight", "post_norm": p + "post_attention_layernorm.weight",
    }


@dataclass(frozen=True)
class ModelShape:
    """The dimensions both formats agree on (vocab unpadded)."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_groups: int
    ffn_hidden_size: int
    vocab_size: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def heads_per_group(self) -> int:
        return self.num_heads // self.num_groups

    @property
    def qkv_rows(self) -> int:
        return (self.num_heads + 2 * self.num_groups) * self.head_dim

    def hf_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every HF tensor name → shape, in the order HF writes them."""
        h, f, d, v = self.hidden_size, self.ffn_hidden_size, self.head_dim, self.vocab_size
        shapes = {EMBED: (v, h)}
        for i in range(self.num_layers):
            n = layer_names(i)
            shapes.update({n["q"]: (self.num_heads * d, h), n["k"]: (self.num_groups * d, h),
                           n["v"]: (self.num_groups * d, h), n["o"]: (h, self.num_heads * d),
                           n["gate"]: (f, h), n["up"]: (f, h), n["down"]: (h, f),
                           n["input_norm"]: (h,), n["post_norm"]: (h,)})
        shapes[FINAL_NORM] = (h,)
        shapes[LM_HEAD] = (v, h)
        return shapes


@dataclass(frozen=True)
class HFLlamaConfig:
    """The parts of a Hugging Face Llama config.json a conversion needs, checked on reading."""

    path: Path
    shape: ModelShape
    rope_theta: float
    rms_norm_eps: float
    max_position_embeddings: int
    torch_dtype: Optional[str]


def _refuse(path: Path, key: str, value, why: str) -> ConvertError:
    return ConvertError(f"{path}: {key}={json.dumps(value)} is not supported ({why})")


def _rope_theta(raw: dict, path: Path) -> float:
    """θ of plain RoPE; any scaling (linear, dynamic, YaRN, Llama 3's) is refused by name.
    transformers 4.x writes `rope_theta` and `rope_scaling`, 5.x `rope_parameters`."""
    scaling = raw.get("rope_scaling")
    if scaling is not None and (scaling.get("rope_type") or scaling.get("type")) != "default":
        raise _refuse(path, "rope_scaling", scaling, "megacode's rotary embedding is plain RoPE with base θ only")
    params = raw.get("rope_parameters") or {}
    if params.get("rope_type", "default") != "default":
        raise _refuse(path, "rope_parameters.rope_type", params["rope_type"],
                      "megacode's rotary embedding is plain RoPE with base θ only")
    theta = params.get("rope_theta", raw.get("rope_theta", 10000.0))
    return float(theta)


# config.json fields whose non-Llama-2 values megacode's model cannot represent: (field, value
# megacode builds, why). Checked by name so that none is silently ignored.
_REQUIRED_VALUES = (
    ("hidden_act", "silu", "megacode's MLP is SwiGLU with SiLU"),
    ("tie_word_embeddings", False, "megacode's output layer is untied from the input embedding, as in Llama 2"),
    ("attention_bias", False, "megacode's attention projections have no biases"),
    ("mlp_bias", False, "megacode's MLP projections have no biases"),
)


def read_hf_config(model_dir: Path) -> HFLlamaConfig:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ConvertError(f"{path} not found: --input must be a Hugging Face model directory")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConvertError(f"{path}: not valid JSON ({err})") from None
    architectures = raw.get("architectures") or []
    if raw.get("model_type") != "llama" or (architectures and HF_ARCHITECTURE not in architectures):
        raise ConvertError(f"{path}: model_type {raw.get('model_type')!r}, architectures {architectures} — "
                           f"only {HF_ARCHITECTURE} (model_type 'llama') can be converted")
    for key, want, why in _REQUIRED_VALUES:
        got = raw.get(key, want)
        if got != want:
            raise _refuse(path, key, got, f"{why}; it needs {key}={json.dumps(want)}")
    try:
        heads = int(raw["num_attention_heads"])
        shape = ModelShape(num_layers=int(raw["num_hidden_layers"]), hidden_size=int(raw["hidden_size"]),
                           num_heads=heads, num_groups=int(raw.get("num_key_value_heads") or heads),
                           ffn_hidden_size=int(raw["intermediate_size"]), vocab_size=int(raw["vocab_size"]))
    except KeyError as err:
        raise ConvertError(f"{path}: missing {err.args[0]!r}") from None
    if shape.hidden_size % shape.num_heads or shape.num_heads % shape.num_groups:
        raise ConvertError(f"{path}: hidden_size={shape.hidden_size}, num_attention_heads={shape.num_heads}, "
                           f"num_key_value_heads={shape.num_groups} do not divide evenly")
    head_dim = raw.get("head_dim")
    if head_dim is not None and int(head_dim) != shape.head_dim:
        raise _refuse(path, "head_dim", head_dim, f"megacode's attention needs head_dim = hidden_size/"
                      f"num_attention_heads = {shape.hidden_size}/{shape.num_heads} = {shape.head_dim}")
    return HFLlamaConfig(path=path, shape=shape, rope_theta=_rope_theta(raw, path),
                         rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
                         max_position_embeddings=int(raw.get("max_position_embeddings", 4096)),
                         torch_dtype=raw.get("torch_dtype") or raw.get("dtype"))


def _mismatches(hf: HFLlamaConfig, flavor: Flavor) -> list[str]:
    s = hf.shape
    pairs = [("hidden_size", s.hidden_size, flavor.hidden_size),
             ("num_attention_heads", s.num_heads, flavor.num_attention_heads),
             ("num_key_value_heads", s.num_groups, flavor.num_query_groups),
             ("intermediate_size", s.ffn_hidden_size, flavor.ffn_hidden_size)]
    out = [f"{key}={got} (flavor {flavor.name}: {want})" for key, got, want in pairs if got != want]
    if s.vocab_size > flavor.vocab_size:
        out.append(f"vocab_size={s.vocab_size} (flavor {flavor.name}: {flavor.vocab_size}; "
                   f"the vocabulary can only grow)")
    if abs(hf.rms_norm_eps - flavor.norm_epsilon) > 1e-12:
        out.append(f"rms_norm_eps={hf.rms_norm_eps} (flavor {flavor.name}: {flavor.norm_epsilon})")
    return out


def match_flavor(hf: HFLlamaConfig, name: Optional[str]) -> Optional[Flavor]:
    """The flavor named by `--flavor`, checked against config.json, or the one its shapes match;
    None (the shapes go into `model.shape`) for `--flavor custom` or when no flavor matches.

    The layer count may differ from the flavor's (recorded as `model.num_layers`, as GPU checks
    run a 7B shape with fewer layers); every other dimension must match, and the vocabulary may
    only grow (Llama 2's 32,000 rows → Code Llama's 32,016).
    """
    if name == CUSTOM:
        return None
    if name is not None:
        if name not in FLAVORS:
            raise ConvertError(f"--flavor {name!r} is not known; choose one of {', '.join(sorted(FLAVORS))}")
        problems = _mismatches(hf, FLAVORS[name])
        if problems:
            raise ConvertError(f"{hf.path} does not match flavor {name}: " + "; ".join(problems))
        return FLAVORS[name]
    candidates = [f for f in FLAVORS.values() if not _mismatches(hf, f)]
    exact_layers = [f for f in candidates if f.num_layers == hf.shape.num_layers]
    chosen = exact_layers or candidates
    if len(chosen) > 1:
        raise ConvertError(f"{hf.path}: several flavors match ({', '.join(f.name for f in chosen)}); pass --flavor")
    return chosen[0] if chosen else None


# The two layout transforms, used on whole tensors or on one TP rank's groups alike -----------

def interleave_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_groups: int) -> torch.Tensor:
    """q `[G·qpg·d, h]`, k/v `[G·d, h]` → Megatron rows `[G·(qpg+2)·d, h]`, grouped q|k|v."""
    h = q.shape[-1]
    parts = (q.reshape(num_groups, -1, h), k.reshape(num_groups, -1, h), v.reshape(num_groups, -1, h))
    return torch.cat(parts, dim=1).reshape(-1, h)


def split_qkv(qkv: torch.Tensor, shape: ModelShape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of `interleave_qkv` for the whole tensor `[qkv_rows, h]`: views q `[G, qpg·d, h]`,
    k and v `[G, d, h]`; `.reshape(-1, h)` gives HF's tensor (a copy of only the one needed)."""
    d, h = shape.head_dim, qkv.shape[-1]
    grouped = qkv.reshape(shape.num_groups, (shape.heads_per_group + 2) * d, h)
    q, k, v = torch.split(grouped, [shape.heads_per_group * d, d, d], dim=1)
    return q, k, v

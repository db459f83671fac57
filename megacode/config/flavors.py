"""Named model shapes (Llama 2 architecture) with the source of each number.

Sources: Llama 2 paper (arXiv 2307.09288) Table 1 and the released `params.json` files for
layers/hidden/heads/KV groups/FFN; Code Llama (arXiv 2308.12950) §2.3 for the vocabulary
grown to 32,016 by the four infilling tokens (the 34B model has no infilling and keeps 32,000).
Parameter counts in DESIGN.md §2 follow from these shapes (checked by the tests).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from megacode.config.schema import ConfigError, RunConfig, ShapeConfig

CUSTOM = "custom"
"""`model.flavor` value meaning: the shapes are the run config's `model.shape`."""
SHAPE_FIELDS = ("num_layers", "hidden_size", "num_attention_heads", "num_query_groups", "ffn_hidden_size",
                "vocab_size", "norm_epsilon", "rope_base", "max_position_embeddings")
REQUIRED_SHAPE_FIELDS = ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size", "vocab_size")


@dataclass(frozen=True)
class Flavor:
    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    """KV heads: equal to the head count for MHA (7B, 13B), 8 for GQA (34B, 70B)."""
    ffn_hidden_size: int
    vocab_size: int
    """Unpadded vocabulary; embedding rows are padded for TP at build time."""
    rope_base: float = 10000.0
    """RoPE θ of the weights this flavor starts from (Llama 2: 10,000)."""
    norm_epsilon: float = 1e-5
    max_position_embeddings: int = 4096

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def parameter_count(self) -> int:
        """Exact count (unpadded vocab): untied embedding + output, SwiGLU MLP, no biases."""
        h, f, v = self.hidden_size, self.ffn_hidden_size, self.vocab_size
        kv = self.num_query_groups * self.head_dim
        attention = h * h + 2 * h * kv + h * h  # q, k, v, o projections
        mlp = 3 * h * f  # gate, up, down
        norms = 2 * h
        return 2 * v * h + self.num_layers * (attention + mlp + norms) + h

    def describe(self) -> str:
        return (f"{self.name} ({self.num_layers} layers, hidden {self.hidden_size}, {self.num_attention_heads} heads, "
                f"{self.num_query_groups} KV groups, FFN {self.ffn_hidden_size}, vocab {self.vocab_size})")

    def shape_config(self) -> ShapeConfig:
        """This shape as the `model.shape` section of a run config."""
        return ShapeConfig(**{name: getattr(self, name) for name in SHAPE_FIELDS})


FLAVORS: dict[str, Flavor] = {
    # Llama 2 7B params.json: dim 4096, n_layers 32, n_heads 32, FFN 11008 (multiple_of 256).
    "codellama-7b": Flavor("codellama-7b", 32, 4096, 32, 32, 11008, 32016),
    # Llama 2 13B params.json: dim 5120, n_layers 40, n_heads 40, FFN 13824.
    "codellama-13b": Flavor("codellama-13b", 40, 5120, 40, 40, 13824, 32016),
    # Code Llama 34B (Llama 2 34B shape): dim 8192, 48 layers, 64 heads, 8 KV heads, FFN 22016;
    # no infilling, so the Llama 2 vocabulary of 32,000 (Code Llama §2.3).
    "codellama-34b": Flavor("codellama-34b", 48, 8192, 64, 8, 22016, 32000),
    # Llama 2 70B params.json: dim 8192, 80 layers, 64 heads, 8 KV heads, FFN 28672.
    "codellama-70b": Flavor("codellama-70b", 80, 8192, 64, 8, 28672, 32016),
    # Tests and CPU runs: same architecture, GQA on, a vocabulary a tiny SentencePiece model fills.
    "tiny": Flavor("tiny", 4, 64, 4, 2, 176, 512, max_position_embeddings=256),
    # Tiny MHA variant (7B/13B-style attention) for parity tests.
    "tiny-mha": Flavor("tiny-mha", 4, 64, 4, 4, 176, 512, max_position_embeddings=256),
}


def get_flavor(name: str) -> Flavor:
    try:
        return FLAVORS[name]
    except KeyError:
        raise ConfigError(f"model.flavor {name!r} is not known; choose one of {', '.join(sorted(FLAVORS))}, "
                          f"or {CUSTOM} with model.shape") from None


def check_shape(shape: Flavor) -> Flavor:
    """Cross-field checks of a Llama shape, one line naming the values (TP divisibility is the
    layout's check, megacode.config.layout)."""
    h, n, g = shape.hidden_size, shape.num_attention_heads, shape.num_query_groups
    if h % n:
        raise ConfigError(f"model {shape.name}: hidden_size={h} is not divisible by num_attention_heads={n}")
    if n % g:
        raise ConfigError(f"model {shape.name}: num_attention_heads={n} is not divisible by num_query_groups={g}")
    if shape.head_dim % 2:
        raise ConfigError(f"model {shape.name}: head dimension hidden_size/num_attention_heads = {h}/{n} = "
                          f"{shape.head_dim} must be even for rotary embeddings")
    return shape


def rope_base(cfg: RunConfig, shape: Flavor) -> float:
    """The run's RoPE θ: `model.rope_base`, else the weights' (the flavor's or model.shape's)."""
    return cfg.model.rope_base if cfg.model.rope_base is not None else shape.rope_base


def model_shape(cfg: RunConfig) -> Flavor:
    """The shape a run builds: its flavor's (or `model.shape` for `custom`), with the layer count
    of `model.num_layers` and the vocabulary of `data.vocab_size` when those are set. `rope_base`
    stays the weights' θ; the run's is `rope_base(cfg, shape)`."""
    model = cfg.model
    if model.flavor == CUSTOM:
        s = model.shape
        missing = [name for name in REQUIRED_SHAPE_FIELDS if getattr(s, name) is None]
        if missing:
            raise ConfigError(f"model.flavor={CUSTOM} needs model.shape.{', model.shape.'.join(missing)}")
        values = {name: getattr(s, name) for name in SHAPE_FIELDS}
        values["num_query_groups"] = s.num_query_groups or s.num_attention_heads
        base = Flavor(name=CUSTOM, **values)
    else:
        base = get_flavor(model.flavor)
        if model.shape.given():
            raise ConfigError(f"model.shape is set but model.flavor={model.flavor} names a registered shape; "
                              f"set model.flavor={CUSTOM} to build model.shape")
    resolved = dataclasses.replace(base, num_layers=model.num_layers or base.num_layers,
                                   vocab_size=cfg.data.vocab_size or base.vocab_size)
    return check_shape(resolved)

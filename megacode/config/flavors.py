"""Named model shapes (Llama 2 architecture) with the source of each number.

Sources: Llama 2 paper (arXiv 2307.09288) Table 1 and the released `params.json` files for
layers/hidden/heads/KV groups/FFN; Code Llama (arXiv 2308.12950) §2.3 for the vocabulary
grown to 32,016 by the four infilling tokens (the 34B model has no infilling and keeps 32,000).
Parameter counts in DESIGN.md §2 follow from these shapes (checked by the tests).
"""

from __future__ import annotations

from dataclasses import dataclass

from megacode.config.schema import ConfigError


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
        raise ConfigError(f"model.flavor {name!r} is not known; choose one of {', '.join(sorted(FLAVORS))}") from None

"""RMSNorm for the local (non-TE) layer spec, with sequence-parallel support.

Megatron-Core's torch-norm fallback refuses sequence parallelism. Under SP each TP rank
normalizes its own slice of the sequence `[s/tp, b, h]`, so the weight's gradient is a partial
sum per rank; marking the weight `sequence_parallel` makes `finalize_model_grads` all-reduce it
across the TP group, which is what Transformer Engine's norm does on GPU.
"""

from __future__ import annotations

import torch

from megatron.core.transformer import TransformerConfig


class RMSNorm(torch.nn.Module):
    """y = weight * (x / sqrt(mean(x^2) + eps)); the statistic in fp32, as HF's LlamaRMSNorm."""

    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **unused):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype))
        setattr(self.weight, "sequence_parallel", bool(config.sequence_parallel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [s, b, h]
        x_fp32 = x.float()
        normed = x_fp32 * torch.rsqrt(x_fp32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)

"""Throughput accounting (DESIGN.md §5): tokens/s, model TFLOP/s and MFU per GPU.

Model FLOPs per token use the PaLM/NeMo count, 6N + 12·L·h·s, with N all parameters except
the input embedding table and attention counted non-causal, so figures compare with NVIDIA's
published tables. MFU divides by the H100 SXM dense BF16 peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import psutil
import torch

from megacode.config import Flavor

H100_BF16_PEAK_TFLOPS = 989.0


def flops_per_token(shape: Flavor, seq_length: int) -> float:
    """For the run's resolved shape (megacode.config.model_shape: layers and vocabulary as built)."""
    non_embedding = shape.parameter_count() - shape.vocab_size * shape.hidden_size
    return 6.0 * non_embedding + 12.0 * shape.num_layers * shape.hidden_size * seq_length


def pipeline_bubble(pp: int, num_microbatches: int, vp: Optional[int]) -> float:
    """Idle fraction of 1F1B, (p-1)/m, or interleaved, (p-1)/(v·m)."""
    return (pp - 1) / ((vp or 1) * num_microbatches)


@dataclass
class Throughput:
    tokens_per_s_per_gpu: float
    tflops_per_gpu: float
    mfu: Optional[float]
    """None on CPU, where the H100 peak means nothing."""


def throughput(tokens: int, seconds: float, world_size: int, flops_token: float) -> Throughput:
    per_gpu = tokens / max(seconds, 1e-9) / world_size
    tflops = per_gpu * flops_token / 1e12
    mfu = tflops / H100_BF16_PEAK_TFLOPS if torch.cuda.is_available() else None
    return Throughput(per_gpu, tflops, mfu)


def memory_gib() -> dict[str, float]:
    """Peak device memory on GPU; resident set size of this process on CPU."""
    if torch.cuda.is_available():
        return {"mem_alloc_peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                "mem_reserved_gib": torch.cuda.memory_reserved() / 2**30}
    return {"mem_rss_gib": psutil.Process().memory_info().rss / 2**30}

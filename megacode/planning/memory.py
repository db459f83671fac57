"""Per-GPU memory of a training layout, from the model shape alone (no GPU, no weights).

Model state (mixed precision as the trainer builds it, megacode/training/optimizer.py):
    bf16 weights 2 B + fp32 gradient buffer 4 B (`grad_reduce_in_fp32`) per parameter held, and
    Adam's fp32 master weight, m and v, 12 B per parameter, sharded over the DP ranks by the
    distributed optimizer: 6 + 12/DP bytes per parameter (Megatron-LM's distributed-optimizer
    table gives the same "6 + 12/d" for bf16 params with fp32 grads). The parameters a GPU holds:
    its pipeline stage's layers / TP (norm weights whole), plus the padded embedding (first stage)
    or output layer and final norm (last stage), / TP.

Activations follow Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models" (arXiv 2205.05198), §4: count the bytes every layer keeps for backward, per micro-batch,
in 16-bit elements. For their GPT layer that count is `s·b·h·(34 + 5·a·s/h)` bytes (attention 11sbh
+ 5as²b, MLP 19sbh, two LayerNorms 4sbh). The same count for a Llama layer (no dropout, so no
masks; RMSNorm; SwiGLU with FFN width f; grouped-query attention with KV width kv = groups·head):

    attention:  norm input 2sbh + QKV input 2sbh + Q, K, V 2sb(h + 2kv) + out-proj input 2sbh
                (+ softmax output 2·a·s²·b when attention scores are stored)
    MLP:        norm input 2sbh + fc1 input 2sbh + [gate; up] 4sbf + SiLU(gate) 2sbf + fc2 input 2sbf
    per layer:  s·b·(12h + 4kv + 8f)  (+ 2as²b)                      e.g. 7B: 37.5·sbh vs GPT's 34·sbh

Tensor parallelism divides everything except the norm regions by t; sequence parallelism
(Korthikanti §4.2.2) divides those too, so with SP the whole layer is /t. Without SP the 8sbh of
norm inputs and linear inputs stay whole. `parallel.recompute` (§5):
    none       all of the above; the s² scores too unless attention is fused/flash (Transformer
               Engine on H100, the trainer's GPU path), which keeps only an fp32 log-sum-exp,
               `4·a·s·b/t` bytes: then "none" costs what Korthikanti's selective recompute does
    selective  attention scores recomputed: Korthikanti's 34sbh/t (GPT), here s·b·(12h+4kv+8f)/t
    full       only each layer's input, 2sbh/t, plus one layer's full set while it is recomputed.
Pipelining (§4.2.3): with 1F1B pipeline rank r holds min(p − r, m) micro-batches of its L/p layers
(Megatron's warm-up count + 1), so the first stage holds L layers' worth; the interleaved schedule
holds L·(1 + (p−1)/(p·v)) there (`held_layers`). The last stage adds the output layer's input
2sbh/t, the final norm's input 2sbh/t and fp32 logits/softmax `4·s·b·V/t` of its one micro-batch in flight.

An allowance covers what no formula gives: CUDA context, NCCL and Transformer Engine workspaces,
the allocator's fragmentation (OVERHEAD_GIB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from megacode.config.flavors import Flavor

GIB = 2.0 ** 30
OVERHEAD_GIB = 6.0
"""CUDA context (~0.5–1 GiB), NCCL buffers (~1–2 GiB), TE workspaces and fragmentation."""
H100_USABLE_GIB = 79.6
"""An 80 GB H100 SXM reports 81,559 MiB = 79.6 GiB to CUDA."""
RECOMPUTE_MODES = ("none", "selective", "full")


@dataclass(frozen=True)
class MemoryShape:
    """Everything the estimate depends on."""

    flavor: Flavor
    num_layers: int
    padded_vocab: int
    seq_length: int
    micro_batch: int
    num_microbatches: int
    tp: int
    pp: int
    vp: Optional[int]
    dp: int
    sequence_parallel: bool
    distributed_optimizer: bool
    recompute: str = "none"
    """`parallel.recompute`: none, selective or full."""
    flash_attention: bool = True
    """Fused/flash attention (Transformer Engine on GPU): no s² scores kept even without recompute."""


@dataclass(frozen=True)
class StageMemory:
    """Bytes on one GPU of one pipeline stage."""

    stage: str
    """"first", "last" or "only" (PP=1)."""
    parameters: float
    weights: float
    grads: float
    optimizer: float
    activations: float
    overhead: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations + self.overhead

    def gib(self, field: str) -> float:
        return getattr(self, field) / GIB


def layer_parameters(f: Flavor, tp: int) -> float:
    """Parameters of one transformer layer on one TP rank: q, k, v, o and the SwiGLU MLP / tp,
    the two RMSNorm weights whole."""
    kv = f.num_query_groups * f.head_dim
    return (2 * f.hidden_size * f.hidden_size + 2 * f.hidden_size * kv + 3 * f.hidden_size * f.ffn_hidden_size) / tp \
        + 2 * f.hidden_size


def layer_activation_bytes(m: MemoryShape) -> float:
    """Bytes one layer keeps for one micro-batch (module docstring), per TP rank, no recompute of
    the layer as a whole."""
    f, s, b, t = m.flavor, m.seq_length, m.micro_batch, m.tp
    h, a, ffn = f.hidden_size, f.num_attention_heads, f.ffn_hidden_size
    kv = f.num_query_groups * f.head_dim
    total = s * b * (12 * h + 4 * kv + 8 * ffn)
    if m.sequence_parallel or t == 1:
        sharded = total / t
    else:
        whole = 8 * s * b * h  # norm inputs (2 × 2sbh) and QKV/fc1 inputs (2 × 2sbh) replicated
        sharded = whole + (total - whole) / t
    if m.recompute == "none" and not m.flash_attention:
        sharded += 2 * a * s * s * b / t  # softmax output, bf16
    elif m.flash_attention:
        sharded += 4 * a * s * b / t  # flash attention's fp32 log-sum-exp
    return sharded


def held_layers(m: MemoryShape, rank: int) -> float:
    """Layer-activations (in units of one layer × one micro-batch) pipeline rank `rank` holds at its
    peak: the micro-batches Megatron's schedule runs forward before the first backward, plus one.
    1F1B: min(p − rank, m) micro-batches of L/p layers (rank 0: L layers, Korthikanti §4.2.3);
    interleaved: min(2(p − rank − 1) + (v − 1)p + 1, m·v) chunks of L/(p·v) layers
    (rank 0: L·(1 + (p−1)/(p·v))); no pipelining: one micro-batch of all L layers."""
    p, v, L = m.pp, (m.vp or 1), m.num_layers
    if p == 1:
        return float(L)
    if v == 1:
        return min(p - rank, m.num_microbatches) * L / p
    chunks = min(2 * (p - rank - 1) + (v - 1) * p + 1, m.num_microbatches * v)
    return chunks * L / (p * v)


def stage_activation_bytes(m: MemoryShape, rank: int) -> float:
    """Activations of pipeline rank `rank` at its peak, output layer included on the last rank."""
    f, s, b, t = m.flavor, m.seq_length, m.micro_batch, m.tp
    layer = layer_activation_bytes(m)
    held = held_layers(m, rank)
    if m.recompute == "full":
        kept = held * 2 * s * b * f.hidden_size / (t if m.sequence_parallel else 1) + layer  # + the one recomputed
    else:
        kept = held * layer
    if rank == m.pp - 1:  # output layer and final norm inputs, fp32 logits/softmax of one micro-batch
        kept += 2 * 2 * s * b * f.hidden_size / t + 4 * s * b * m.padded_vocab / t
    return kept


def estimate(m: MemoryShape) -> list[StageMemory]:
    """Per-GPU memory of the first and last pipeline stages (one entry when PP=1)."""
    if m.recompute not in RECOMPUTE_MODES:
        raise ValueError(f"recompute must be one of {', '.join(RECOMPUTE_MODES)}, got {m.recompute!r}")
    f = m.flavor
    layers = m.num_layers / m.pp * layer_parameters(f, m.tp)
    embedding = m.padded_vocab * f.hidden_size / m.tp
    stages = []
    names = ["only"] if m.pp == 1 else ["first", "last"]
    for name in names:
        params = layers
        if name in ("first", "only"):
            params += embedding
        if name in ("last", "only"):
            params += embedding + f.hidden_size  # output layer (untied) + final norm
        activations = stage_activation_bytes(m, m.pp - 1 if name == "last" else 0)
        shards = m.dp if m.distributed_optimizer else 1
        stages.append(StageMemory(name, params, weights=2 * params, grads=4 * params,
                                  optimizer=12 * params / shards, activations=activations,
                                  overhead=OVERHEAD_GIB * GIB))
    return stages

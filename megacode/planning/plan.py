"""Dry run of a training config at its full size, without a GPU (`tools/plan_run.py`).

`plan_run(cfg, nodes, gpus_per_node)` does every check a launch would do before the first step,
then the arithmetic a person does before asking for a thousand GPUs:

1. the layout for `nodes × gpus_per_node` ranks (`resolve_layout`: TP/PP/VP divide the heads,
   groups and layers, the global batch divides into micro-batches × DP, the pipeline fills), the
   padded vocabulary divides by TP, Megatron-Core's own `TransformerConfig` accepts it, and the
   schedule's warm-up fits in the decay;
2. the real Megatron-Core model built on the meta device at TP1 PP1 (no memory) for the exact
   parameter count, checked against the flavor's closed-form count;
3. per-GPU memory of the first and last pipeline stages (`megacode.planning.memory`);
4. tokens per step, steps, tokens in total, the pipeline bubble (DESIGN.md §5), model FLOPs per
   token (6N + 12·L·h·s) and GPU-hours and days at a stated MFU.

Data files are not opened (a planning machine rarely has them); placeholder prefixes are listed.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import List, Optional

from megacode.config import ConfigError, Flavor, Layout, RunConfig, model_shape, resolve_layout, rope_base
from megacode.planning.memory import H100_USABLE_GIB, MemoryShape, StageMemory, estimate
from megacode.training.metrics import H100_BF16_PEAK_TFLOPS, flops_per_token, pipeline_bubble

PLACEHOLDER = "REPLACE"
"""Data prefixes in the recipe configs that a user must point at their own files contain this."""
DEFAULT_MFU = 0.40
"""Assumed model FLOPs utilisation for the time estimate: BF16 Megatron-Core on H100 typically
reaches 40–50 % for Llama shapes (NVIDIA's FP8 Llama 2 7B figure, 767 TFLOP/s, is 78 % of the
BF16 peak); 40 % keeps the estimate on the safe side."""


@dataclass
class Plan:
    config_path: Optional[str]
    cfg: RunConfig
    layout: Layout
    nodes: int
    gpus_per_node: int
    attention: str
    """"flash" (Transformer Engine, the GPU path) or "unfused" (stores the s² scores)."""
    parameters: int
    """Exact count from the meta-device model, vocab padding excluded."""
    padded_vocab: int
    memory: List[StageMemory]
    flops_per_token: float
    mfu: float
    notes: List[str] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def tokens_per_step(self) -> int:
        return self.layout.global_batch_size * self.cfg.data.seq_length

    @property
    def total_tokens(self) -> int:
        return self.tokens_per_step * self.cfg.train.iters

    @property
    def bubble(self) -> float:
        return pipeline_bubble(self.layout.pp, self.layout.num_microbatches, self.layout.vp)

    @property
    def peak_gib(self) -> float:
        return max(stage.total for stage in self.memory) / 2**30

    @property
    def gpu_hours(self) -> float:
        return self.total_tokens * self.flops_per_token / (self.mfu * H100_BF16_PEAK_TFLOPS * 1e12) / 3600

    @property
    def days(self) -> float:
        return self.gpu_hours / self.world_size / 24


@functools.lru_cache(maxsize=None)
def _meta_parameter_count(shape: Flavor, divisible_by: int) -> int:
    from megacode.models.params import shape_parameter_count

    return shape_parameter_count(shape, divisible_by)


def _check_megatron(cfg: RunConfig, layout: Layout) -> None:
    """Megatron-Core's TransformerConfig validates the layout-dependent settings itself."""
    from megacode.models.llama import transformer_config

    try:
        transformer_config(cfg, layout, use_cpu_initialization=True)
    except (ValueError, AssertionError) as err:
        raise ConfigError(f"Megatron-Core rejects the layout TP{layout.tp} PP{layout.pp} VP{layout.vp}: "
                          f"{err}") from None


def _data_notes(cfg: RunConfig) -> List[str]:
    from megacode.data.dialog_dataset import entry_kind

    notes = []
    entries = list(cfg.data.paths) + list(cfg.data.valid_paths)
    for entry in entries:
        try:
            entry_kind(entry)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    placeholders = [str(e["path"]) for e in entries if PLACEHOLDER in str(e["path"])]
    if placeholders:
        notes.append(f"data.paths: {len(placeholders)} placeholder prefix(es) to replace before training: "
                     + ", ".join(placeholders))
    missing = [str(e["path"]) for e in entries
               if PLACEHOLDER not in str(e["path"]) and not os.path.exists(str(e["path"]) + ".idx")]
    if missing:
        notes.append("data.paths not found here (fine on a planning machine): " + ", ".join(missing))
    if not entries:
        notes.append("data.paths is empty: the run would train on the synthetic token stream")
    tok = cfg.data.tokenizer_model
    if tok and (PLACEHOLDER in tok or not os.path.exists(tok)):
        notes.append(f"data.tokenizer_model {tok} is {'a placeholder' if PLACEHOLDER in tok else 'not found here'}")
    return notes


def plan_run(cfg: RunConfig, nodes: int, gpus_per_node: int = 8, mfu: float = DEFAULT_MFU,
             flash_attention: bool = True, config_path: Optional[str] = None) -> Plan:
    """Validate `cfg` for `nodes × gpus_per_node` ranks and estimate memory and cost (ConfigError
    on anything a launch would refuse)."""
    from megacode.models.llama import padded_vocab_size

    if nodes < 1 or gpus_per_node < 1:
        raise ConfigError(f"nodes and gpus per node must be >= 1, got {nodes} and {gpus_per_node}")
    if not 0 < mfu <= 1:
        raise ConfigError(f"MFU must be in (0, 1], got {mfu}")
    world = nodes * gpus_per_node
    layout = resolve_layout(cfg, world)
    flavor = model_shape(cfg)  # layers and vocabulary as the run builds them
    vocab = flavor.vocab_size
    padded = padded_vocab_size(vocab, cfg.model.make_vocab_size_divisible_by, layout.tp)
    _check_megatron(cfg, layout)
    decay = cfg.schedule.decay_iters or cfg.train.iters
    if decay > 0 and cfg.schedule.warmup_iters >= decay:
        raise ConfigError(f"schedule.warmup_iters={cfg.schedule.warmup_iters} must be below the decay length "
                          f"(schedule.decay_iters or train.iters) = {decay}")
    notes = _data_notes(cfg)
    if cfg.checkpoint.finetune and not cfg.checkpoint.load:
        raise ConfigError("checkpoint.finetune=true starts a stage from checkpoint.load, which is not set")
    theta = rope_base(cfg, flavor)
    if cfg.data.seq_length > flavor.max_position_embeddings and theta <= flavor.rope_base:
        notes.append(f"data.seq_length={cfg.data.seq_length} is beyond the {flavor.max_position_embeddings} the "
                     f"weights were trained at, with RoPE θ unchanged (long-context stages raise model.rope_base)")

    if cfg.parallel.recompute == "full":
        notes.append("parallel.recompute=full reruns each layer's forward in backward (~1/3 more hardware FLOPs "
                     "than the model FLOPs counted here): expect a lower MFU than with no recompute")
    count = _meta_parameter_count(flavor, cfg.model.make_vocab_size_divisible_by)
    closed_form = flavor.parameter_count()
    if count != closed_form:
        raise ConfigError(f"model {flavor.name}: the meta-device model has {count:,} parameters, the flavor's "
                          f"shape gives {closed_form:,}: the model code and the flavor table disagree")
    shape = MemoryShape(flavor=flavor, num_layers=layout.num_layers,
                        padded_vocab=padded, seq_length=cfg.data.seq_length, micro_batch=layout.micro_batch_size,
                        num_microbatches=layout.num_microbatches, tp=layout.tp, pp=layout.pp, vp=layout.vp,
                        dp=layout.dp, sequence_parallel=cfg.parallel.sequence_parallel,
                        distributed_optimizer=cfg.parallel.distributed_optimizer, recompute=cfg.parallel.recompute,
                        flash_attention=flash_attention)
    attention = "flash" if flash_attention else "unfused"
    return Plan(config_path, cfg, layout, nodes, gpus_per_node, attention, count, padded, estimate(shape),
                flops_per_token(flavor, cfg.data.seq_length), mfu, notes)


def format_plan(plan: Plan) -> str:
    cfg, lay = plan.cfg, plan.layout
    shape = model_shape(cfg)
    lines = [
        f"plan: {plan.config_path or 'config'}",
        f"  model      {shape.describe()}: {plan.parameters:,} parameters (meta-device build, TP1 PP1), "
        f"vocab {plan.padded_vocab} padded, RoPE θ {rope_base(cfg, shape):g}",
        f"  layout     {plan.nodes} nodes x {plan.gpus_per_node} GPUs = {plan.world_size}: TP{lay.tp} PP{lay.pp} "
        f"VP{lay.vp or 1} DP{lay.dp}, sequence parallel {'on' if cfg.parallel.sequence_parallel else 'off'}, "
        f"distributed optimizer {'on' if cfg.parallel.distributed_optimizer else 'off'}",
        f"  batch      {plan.tokens_per_step:,} tokens/step = {lay.global_batch_size} x {cfg.data.seq_length}; "
        f"{lay.num_microbatches} micro-batches of {lay.micro_batch_size} per DP rank",
        f"  pipeline   bubble {100 * plan.bubble:.2f}% ((p-1)/{'(v*m)' if lay.vp else 'm'})",
        f"  schedule   {cfg.train.iters:,} steps = {plan.total_tokens / 1e9:,.2f}B tokens; LR {cfg.optim.lr:g} -> "
        f"{cfg.optim.min_lr:g}, warm-up {cfg.schedule.warmup_iters}, {cfg.schedule.style}",
        f"  memory     per GPU, GiB (recompute {cfg.parallel.recompute}, {plan.attention} attention; "
        f"formulas: megacode/planning/memory.py)",
    ]
    for stage in plan.memory:
        lines.append(f"    {stage.stage:<5} stage  params {stage.parameters / 1e9:6.2f}B  "
                     f"weights {stage.gib('weights'):5.1f}  grads {stage.gib('grads'):5.1f}  "
                     f"optimizer {stage.gib('optimizer'):5.1f}  activations {stage.gib('activations'):5.1f}  "
                     f"overhead {stage.gib('overhead'):4.1f}  total {stage.total / 2**30:5.1f}")
    fits = "fits" if plan.peak_gib < H100_USABLE_GIB else "DOES NOT FIT"
    lines += [
        f"    peak {plan.peak_gib:.1f} GiB of {H100_USABLE_GIB} GiB on an 80 GB H100: {fits}",
        f"  compute    {plan.flops_per_token / 1e9:.1f} GFLOP/token (6N + 12*L*h*s); at {100 * plan.mfu:.0f}% MFU "
        f"({plan.mfu * H100_BF16_PEAK_TFLOPS:.0f} TFLOP/s per GPU): {plan.gpu_hours:,.0f} GPU-hours = "
        f"{plan.days:.1f} days on {plan.world_size} GPUs",
    ]
    lines += [f"  note       {note}" for note in plan.notes]
    return "\n".join(lines)

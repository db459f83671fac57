"""Typed run configuration: one dataclass per concern, validated on construction.

Core code receives these objects, never a global args namespace. `megacode.config.loader`
is the one boundary that turns YAML files and `key=value` overrides into them. Every
`__post_init__` error names the offending values so a bad config fails with one clear line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional


class ConfigError(ValueError):
    """A configuration value or combination is invalid; the message names the values."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class ShapeConfig:
    """A Llama model's shapes given in the run config (`model.flavor: custom`), for a model no
    registered flavor has. Cross-field checks (heads vs groups vs hidden, RoPE's even head
    dimension) run when the shape is resolved: `megacode.config.flavors.model_shape`."""

    num_layers: Optional[int] = None
    hidden_size: Optional[int] = None
    num_attention_heads: Optional[int] = None
    num_query_groups: Optional[int] = None
    """KV heads (grouped-query attention); None = num_attention_heads (multi-head attention)."""
    ffn_hidden_size: Optional[int] = None
    """SwiGLU width: gate and up are [ffn_hidden_size, hidden_size] each."""
    vocab_size: Optional[int] = None
    """Vocabulary before TP padding (data.vocab_size, when set, overrides it as for a flavor)."""
    norm_epsilon: float = 1e-5
    """RMSNorm epsilon (HF `rms_norm_eps`)."""
    rope_base: float = 10000.0
    """RoPE θ of the weights (HF `rope_theta`); model.rope_base, when set, overrides it for a run."""
    max_position_embeddings: int = 4096
    """Context the weights were trained at."""

    def given(self) -> bool:
        """Whether any field differs from its default (a shape section is present)."""
        return self != ShapeConfig()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _require(value is None or value > 0, f"model.shape.{f.name} must be positive, got {value}")


FP8_RECIPES = ("delayed", "tensorwise", "blockwise")
ATTENTION_BACKENDS = ("auto", "sdpa", "unfused")


@dataclass
class ModelConfig:
    flavor: str = "tiny"
    """Name in `megacode.config.flavors.FLAVORS` (`tiny`, `codellama-7b`, ...), or `custom`: the
    shapes given in `model.shape`."""
    shape: ShapeConfig = field(default_factory=ShapeConfig)
    """Shapes of a `custom` model (tools/convert_checkpoint.py hf-to-megacode writes them for an
    imported model no flavor matches); must stay empty with a registered flavor."""
    rope_base: Optional[float] = None
    """RoPE base θ; None keeps the flavor's (10,000 for Llama 2; 1,000,000 after long-context FT)."""
    num_layers: Optional[int] = None
    """Override the flavor's layer count (GPU checks run a 7B shape with fewer layers)."""
    init_method_std: float = 0.02
    """Std of the normal initialisation of fresh weights."""
    make_vocab_size_divisible_by: int = 128
    """Embedding rows are padded to a multiple of this times TP (Megatron convention)."""
    fp8: bool = False
    """Use Transformer Engine FP8 (recipe: `fp8_recipe`) for the linear layers; needs TE + CUDA
    (an FP8-capable GPU: Hopper or later) and `attention_backend: auto`."""
    fp8_recipe: str = "delayed"
    """FP8 scaling with `fp8: true`, the recipes Hopper runs (Megatron-Core 0.16.1 → TE):
    `delayed` (per-tensor scale from an amax history, HYBRID: E4M3 forward, E5M2 gradients),
    `tensorwise` (per-tensor current scaling, HYBRID; TE >= 2.2), `blockwise` (a scale per
    1x128 / 128x128 block, E4M3 throughout as DeepSeek-V3 and TE's default; TE >= 2.3).
    MXFP8 needs Blackwell and is not offered."""
    attention_backend: str = "auto"
    """Core attention: `auto` (Transformer Engine's fused attention in the TE spec when TE and
    CUDA are present, otherwise `sdpa`), `sdpa` (the local spec with PyTorch's
    scaled_dot_product_attention: flash / memory-efficient kernels, no s x s scores), `unfused`
    (the local spec with Megatron-Core's DotProductAttention, which materializes the scores).
    `sdpa` and `unfused` use the local spec even where TE is installed. Core attention has no
    weights: a checkpoint moves between backends."""

    def __post_init__(self) -> None:
        _require(self.fp8_recipe in FP8_RECIPES,
                 f"model.fp8_recipe must be one of {', '.join(FP8_RECIPES)}, got {self.fp8_recipe!r}")
        _require(self.attention_backend in ATTENTION_BACKENDS,
                 f"model.attention_backend must be one of {', '.join(ATTENTION_BACKENDS)}, "
                 f"got {self.attention_backend!r}")
        _require(not self.fp8 or self.attention_backend == "auto",
                 f"model.fp8=true needs the Transformer Engine spec (model.attention_backend=auto), "
                 f"got model.attention_backend={self.attention_backend!r}")
        _require(self.num_layers is None or self.num_layers > 0,
                 f"model.num_layers must be positive, got {self.num_layers}")
        _require(self.rope_base is None or self.rope_base > 0,
                 f"model.rope_base must be positive, got {self.rope_base}")
        _require(self.make_vocab_size_divisible_by > 0,
                 f"model.make_vocab_size_divisible_by must be positive, got {self.make_vocab_size_divisible_by}")


@dataclass
class ParallelConfig:
    tp: int = 1
    """Tensor-parallel size."""
    pp: int = 1
    """Pipeline-parallel size."""
    vp: Optional[int] = None
    """Virtual pipeline stages per pipeline rank (interleaved 1F1B); None = plain 1F1B."""
    sequence_parallel: bool = False
    """Shard activations along the sequence in norm/dropout regions (needs tp > 1)."""
    distributed_optimizer: bool = True
    """Shard optimizer state across data-parallel ranks (Megatron's distributed optimizer)."""
    overlap_grad_reduce: bool = True
    """Overlap DP gradient reduce-scatter with backward (used only on CUDA; gloo runs it synchronously)."""
    timeout_minutes: int = 10
    """Collective timeout: a dead or hung rank stops the job after this long."""
    recompute: str = "none"
    """Activation recompute (Korthikanti et al. 2022): `none`; `selective` (the attention core; flash
    attention keeps no scores anyway); `full` (keep each layer's input, recompute the layer in
    backward: what 16k-token long-context fine-tuning of the large flavors needs)."""

    def __post_init__(self) -> None:
        for name in ("tp", "pp"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 1, f"parallel.{name} must be an integer >= 1, got {value!r}")
        _require(self.vp is None or (isinstance(self.vp, int) and self.vp >= 1),
                 f"parallel.vp must be None or an integer >= 1, got {self.vp!r}")
        _require(self.vp is None or self.vp == 1 or self.pp > 1,
                 f"parallel.vp={self.vp} needs parallel.pp > 1, got pp={self.pp}")
        _require(not self.sequence_parallel or self.tp > 1,
                 f"parallel.sequence_parallel needs parallel.tp > 1, got tp={self.tp}")
        _require(self.recompute in ("none", "selective", "full"),
                 f"parallel.recompute must be none, selective or full, got {self.recompute!r}")


@dataclass
class OptimConfig:
    """AdamW with the Llama 2 / Code Llama defaults (DESIGN.md §1)."""

    lr: float = 3e-4
    """Peak learning rate (3e-4 for 7B/13B stage 1)."""
    min_lr: Optional[float] = None
    """Final learning rate; None means lr / 30 as in the recipe."""
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-5
    clip_grad: float = 1.0
    """Global gradient-norm clip; 0 disables."""

    def __post_init__(self) -> None:
        _require(self.lr > 0, f"optim.lr must be positive, got {self.lr}")
        if self.min_lr is None:
            self.min_lr = self.lr / 30.0
        _require(0 <= self.min_lr <= self.lr, f"optim.min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        _require(0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1,
                 f"optim.adam_beta1/2 must be in [0, 1), got {self.adam_beta1}, {self.adam_beta2}")
        _require(self.clip_grad >= 0, f"optim.clip_grad must be >= 0, got {self.clip_grad}")


@dataclass
class ScheduleConfig:
    warmup_iters: int = 1000
    """Linear warm-up steps (1000 in every Code Llama stage)."""
    decay_iters: Optional[int] = None
    """Steps of cosine decay from peak to min_lr; None = train.iters."""
    style: str = "cosine"
    """`cosine`, `linear` or `constant` after warm-up."""

    def __post_init__(self) -> None:
        _require(self.warmup_iters >= 0, f"schedule.warmup_iters must be >= 0, got {self.warmup_iters}")
        _require(self.style in ("cosine", "linear", "constant"),
                 f"schedule.style must be cosine, linear or constant, got {self.style!r}")


@dataclass
class TrainConfig:
    iters: int = 100
    """Optimizer steps to run in this stage (total, counting resumed ones)."""
    global_batch_tokens: int = 4 * 1024 * 1024
    """Tokens per optimizer step across all data-parallel ranks (4M in stage 1)."""
    micro_batch_size: int = 1
    """Sequences per micro-batch per rank."""
    eval_interval: int = 0
    """Run validation every this many steps; 0 disables."""
    eval_iters: int = 2
    """Global batches per validation run."""
    exit_interval: int = 0
    """Stop (after saving) once this many steps ran in this process; 0 disables. Used by tests."""
    exit_duration_minutes: float = 0.0
    """Time budget of this process (from its start): once exceeded, every rank finishes the step,
    saves and exits with the requeue code (megacode.resilience.exit_codes); 0 disables. Ranks vote
    as a step's optimizer phase begins, so set it below the allocation's wall time by more than
    two steps plus one save."""

    def __post_init__(self) -> None:
        _require(self.iters >= 0, f"train.iters must be >= 0, got {self.iters}")
        _require(self.global_batch_tokens > 0, f"train.global_batch_tokens must be positive, got {self.global_batch_tokens}")
        _require(self.micro_batch_size >= 1, f"train.micro_batch_size must be >= 1, got {self.micro_batch_size}")
        _require(self.exit_duration_minutes >= 0,
                 f"train.exit_duration_minutes must be >= 0, got {self.exit_duration_minutes}")


@dataclass
class FimConfig:
    """Code Llama fill-in-the-middle (DESIGN.md §1)."""

    enabled: bool = False
    rate: float = 0.9
    """Probability of transforming an eligible document."""
    spm_rate: float = 0.5
    """Share of transformed documents laid out as SPM (the rest PSM)."""

    def __post_init__(self) -> None:
        _require(0 <= self.rate <= 1, f"data.fim.rate must be in [0, 1], got {self.rate}")
        _require(0 <= self.spm_rate <= 1, f"data.fim.spm_rate must be in [0, 1], got {self.spm_rate}")


@dataclass
class DataConfig:
    seq_length: int = 4096
    """Tokens per training sequence (4096 stages 1/2/4, 16384 long-context)."""
    paths: list = field(default_factory=list)
    """Blend: list of {path: PREFIX, weight: W}; empty means the synthetic token stream."""
    valid_paths: list = field(default_factory=list)
    """Validation blend; empty means a split of `paths` (see `split`)."""
    split: str = "99,1"
    """Train/valid split of each dataset's documents, in parts."""
    tokenizer_model: Optional[str] = None
    """SentencePiece model file; needed for FIM and decoding."""
    vocab_size: Optional[int] = None
    """Vocabulary size before TP padding; None = the flavor's."""
    cache_dir: Optional[str] = None
    """Where sample/blend indices are cached; None = beside the first dataset."""
    num_workers: int = 2
    """Loader threads reading samples; the next step's micro-batches are prepared in the background
    while the current step computes. 0 reads synchronously in the training thread."""
    loader: str = "auto"
    """Micro-batch collation: `dali` (NVIDIA DALI pipeline, `pip install .[data-gpu]`), `python`
    (numpy/torch; bit-identical batches), or `auto` (DALI when it imports)."""
    fim: FimConfig = field(default_factory=FimConfig)

    def __post_init__(self) -> None:
        _require(self.seq_length >= 8, f"data.seq_length must be >= 8, got {self.seq_length}")
        _require(self.num_workers >= 0, f"data.num_workers must be >= 0, got {self.num_workers}")
        _require(self.loader in ("auto", "dali", "python"),
                 f"data.loader must be auto, dali or python, got {self.loader!r}")
        _require(self.vocab_size is None or self.vocab_size >= 2,
                 f"data.vocab_size must be >= 2 (or null for the flavor's), got {self.vocab_size}")
        parts = self.split.split(",")
        _require(len(parts) == 2 and all(p.strip().replace(".", "", 1).isdigit() for p in parts),
                 f"data.split must be 'train,valid' parts like '99,1', got {self.split!r}")
        for entry in list(self.paths) + list(self.valid_paths):
            _require(isinstance(entry, dict) and "path" in entry,
                     f"data.paths entries must be {{path: PREFIX, weight: W}}, got {entry!r}")
            _require(float(entry.get("weight", 1.0)) > 0,
                     f"data.paths weight must be positive, got {entry!r}")


@dataclass
class CheckpointConfig:
    dir: Optional[str] = None
    """Directory for checkpoints (iter_XXXXXXX/ plus latest_checkpointed_iteration.txt)."""
    interval: int = 0
    """Save every this many steps; 0 saves only at the end."""
    load: Optional[str] = None
    """Checkpoint directory to resume from (defaults to `dir` when it holds one)."""
    load_step: Optional[int] = None
    """Load this step instead of the latest."""
    finetune: bool = False
    """Load weights only: fresh optimizer, schedule and step counter (a new recipe stage)."""
    keep_last: int = 0
    """Keep only the newest K complete checkpoints, plus those `keep_every` selects (0 keeps all).
    The latest complete checkpoint is never deleted."""
    keep_every: int = 0
    """With keep_last > 0: also keep every checkpoint whose step is a multiple of this; 0: none."""
    save_at_end: bool = True
    async_save: bool = False
    """Write the shards in the background (a process forked per save; Megatron-Core's asynchronous
    `dist_checkpointing` save) while training goes on. The loop stalls only while a save is
    prepared: the sharded state (the distributed optimizer's included), the write plan, `common.pt`
    and, on GPUs, the copy of the shards to host memory (held until written; on CPU the fork's
    copy-on-write pages play that part). The completion marker and the tracker still move only
    after every rank's write finished and was checked; the next save, a rollback and every exit
    (end, preemption) first wait for the one in flight."""

    def __post_init__(self) -> None:
        _require(isinstance(self.async_save, bool), f"checkpoint.async_save must be true or false, got {self.async_save!r}")
        _require(self.interval >= 0, f"checkpoint.interval must be >= 0, got {self.interval}")
        _require(self.keep_last >= 0, f"checkpoint.keep_last must be >= 0, got {self.keep_last}")
        _require(self.keep_every >= 0, f"checkpoint.keep_every must be >= 0, got {self.keep_every}")


@dataclass
class ProfileConfig:
    """A `torch.profiler` trace of a few training steps (megacode.training.profiling)."""

    start_step: int = 0
    """First step to trace; 0 traces nothing."""
    end_step: Optional[int] = None
    """Last step to trace (inclusive); None = start_step. Each step is a `ProfilerStep#<step>`
    range from its start to the next step's start (its logging included)."""
    ranks: list = field(default_factory=lambda: [0])
    """Global ranks that trace (each writes its own file)."""
    dir: Optional[str] = None
    """Where the traces go; None = `{logging.dir}/profile` (TensorBoard's profiler plugin finds
    them there). Files: `rank{R}_steps{A}-{B}.pt.trace.json` (Chrome trace JSON), on CUDA also
    `rank{R}_steps{A}-{B}.memory.pickle` (a CUDA memory snapshot for pytorch.org/memory_viz)."""

    @property
    def enabled(self) -> bool:
        return self.start_step > 0

    def __post_init__(self) -> None:
        _require(isinstance(self.start_step, int) and self.start_step >= 0,
                 f"logging.profile.start_step must be an integer >= 0 (0: off), got {self.start_step!r}")
        if self.end_step is None:
            self.end_step = self.start_step
        _require(isinstance(self.end_step, int) and self.end_step >= self.start_step,
                 f"logging.profile.end_step must be >= start_step={self.start_step}, got {self.end_step!r}")
        _require(isinstance(self.ranks, list) and self.ranks
                 and all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in self.ranks),
                 f"logging.profile.ranks must be a non-empty list of ranks >= 0, got {self.ranks!r}")


@dataclass
class LoggingConfig:
    dir: Optional[str] = None
    """TensorBoard event directory; None disables TensorBoard (console only)."""
    interval: int = 1
    """Log every this many steps."""
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    """Profiler traces of chosen steps on chosen ranks; off unless `start_step` is set."""

    def __post_init__(self) -> None:
        _require(self.interval >= 1, f"logging.interval must be >= 1, got {self.interval}")
        _require(not self.profile.enabled or self.profile.dir or self.dir,
                 f"logging.profile (steps {self.profile.start_step}-{self.profile.end_step}) needs "
                 f"logging.profile.dir or logging.dir for its trace files, got neither")


BAD_STEP_POLICIES = ("skip", "rollback", "stop")


@dataclass
class FaultConfig:
    """Preemption, dead or hung ranks, bad numerics (megacode.resilience)."""

    preempt_signals: list = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])
    """Signals that mean "save and exit": every rank finishes the step, saves, exits with the
    requeue code. SLURM: `--signal=USR1@120` warns 120 s before the end of the allocation."""
    exit_status_file: Optional[str] = None
    """Where rank 0 writes `<exit code>\n<reason>\n` before exiting (launchers read it: torchrun
    exits 1 whatever its workers' codes); None = `{checkpoint.dir}/exit_status.txt` when there
    is a checkpoint dir."""
    heartbeat_interval_s: float = 5.0
    """Each rank publishes (step, phase) to the rendezvous store this often; 0 disables the
    dead/hung-rank watchdog."""
    heartbeat_timeout_s: float = 60.0
    """A peer whose heartbeat has not changed for this long is dead or frozen: the job stops with
    a message naming it and what it was doing."""
    stall_timeout_s: float = 1800.0
    """A rank that stays in one phase (a step, evaluation, a save) this long is hung: the job stops
    naming the rank(s) that are behind. Raise it for very slow checkpoint storage."""
    on_bad_step: str = "skip"
    """Loss or grad norm NaN/Inf, or a spike: `skip` the update (the data position still moves
    past the batch), `rollback` to the latest checkpoint and drop the batch, or `stop`."""
    max_bad_in_row: int = 5
    """Stop (exit code for bad numerics) after this many bad steps with no good new step between."""
    loss_spike_factor: float = 0.0
    """A loss above this multiple of the mean of the last `spike_window` good losses is bad; 0 off."""
    grad_norm_spike_factor: float = 0.0
    """Same for the (pre-clipping) gradient norm; 0 off."""
    spike_window: int = 50
    """Good steps averaged for the spike checks; no spike check before the window is full."""
    bad_steps_file: Optional[str] = None
    """JSON lines, one per bad step: step, data position, sample ids and their documents (for
    tools/inspect_data.py); None = `{checkpoint.dir}/bad_steps.jsonl` when there is one."""

    def __post_init__(self) -> None:
        import signal

        for name in self.preempt_signals:
            _require(isinstance(name, str) and isinstance(getattr(signal, name, None), signal.Signals)
                     and name not in ("SIGKILL", "SIGSTOP"),
                     f"fault.preempt_signals entries must be catchable signal names like SIGTERM, got {name!r}")
        _require(self.heartbeat_interval_s >= 0, f"fault.heartbeat_interval_s must be >= 0, got {self.heartbeat_interval_s}")
        _require(self.heartbeat_interval_s == 0 or self.heartbeat_timeout_s >= 2 * self.heartbeat_interval_s,
                 f"fault.heartbeat_timeout_s must be at least twice heartbeat_interval_s, got "
                 f"{self.heartbeat_timeout_s} and {self.heartbeat_interval_s}")
        _require(self.stall_timeout_s > 0, f"fault.stall_timeout_s must be positive, got {self.stall_timeout_s}")
        _require(self.on_bad_step in BAD_STEP_POLICIES,
                 f"fault.on_bad_step must be one of {', '.join(BAD_STEP_POLICIES)}, got {self.on_bad_step!r}")
        _require(self.max_bad_in_row >= 1, f"fault.max_bad_in_row must be >= 1, got {self.max_bad_in_row}")
        _require(self.loss_spike_factor == 0 or self.loss_spike_factor > 1,
                 f"fault.loss_spike_factor must be 0 (off) or > 1, got {self.loss_spike_factor}")
        _require(self.grad_norm_spike_factor == 0 or self.grad_norm_spike_factor > 1,
                 f"fault.grad_norm_spike_factor must be 0 (off) or > 1, got {self.grad_norm_spike_factor}")
        _require(self.spike_window >= 1, f"fault.spike_window must be >= 1, got {self.spike_window}")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)
    seed: int = 1234
    """Seeds weights, data order and dropout; every random choice derives from it."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_schedule(cfg: RunConfig) -> int:
    """The decay length (schedule.decay_iters, else train.iters); raises ConfigError when the
    warm-up does not end before it. Checked when a run starts (before any process group), not
    per section, since the two numbers live in different sections."""
    decay_iters = cfg.schedule.decay_iters or cfg.train.iters
    warmup = cfg.schedule.warmup_iters
    if decay_iters > 0 and warmup >= decay_iters:
        raise ConfigError(f"schedule.warmup_iters={warmup} must be below the decay length "
                          f"(schedule.decay_iters or train.iters) = {decay_iters}")
    return decay_iters

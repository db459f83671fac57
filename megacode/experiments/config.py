"""Experiment configs (configs/experiments/{fim,lcft}_{micro,small}.yaml), typed and validated.

An experiment config names the corpus, the tokenizer, the megacode run config its models share
(`run`: any RunConfig keys, checked by megacode's own loader before anything starts) and the
experiment's own section (`fim` or `lcft`). `base: other.yaml` and `key=value` overrides work as
for run configs (megacode.config.loader).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from megacode.config import ConfigError, RunConfig
from megacode.config.loader import build_dataclass, load_dataclass
from megacode.experiments import EXPERIMENTS

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "configs" / "experiments"
SOURCES = ("stdlib", "installed")


def merge(tree: dict, extra: dict) -> dict:
    """`extra` merged into `tree` in place, section by section (as `base:` chains merge)."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            merge(tree[key], value)
        else:
            tree[key] = copy.deepcopy(value)
    return tree


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass
class CorpusConfig:
    """Python source files of this interpreter, split by file into train and held-out."""

    sources: list = field(default_factory=lambda: list(SOURCES))
    """`stdlib` (the interpreter's library, its site-packages excluded) and/or `installed` (this
    environment's packages)."""
    max_file_bytes: int = 100_000
    """Larger files are left out (generated tables, vendored bundles)."""
    max_line_chars: int = 400
    """Files with a longer line are left out (minified or data-like sources)."""
    heldout_fraction: float = 0.05
    """Share of files held out, chosen by a hash of (seed, path): a file is never on both sides."""
    train_bytes: int = 20_000_000
    """Training files are taken in hash order until their sizes reach this."""
    heldout_bytes: int = 2_000_000
    """Held-out files likewise."""
    chunk_chars: int = 800
    """Chunked documents (the FIM experiment's) gather whole top-level blocks of a file up to about
    this many characters, so that most documents fit a training sequence whole (FIM transforms
    only documents not cut across contexts, Code Llama §2.3)."""
    max_chunk_chars: int = 1600
    """A block longer than this is cut at blank lines, then at any line."""

    def __post_init__(self) -> None:
        bad = [s for s in self.sources if s not in SOURCES]
        _require(bool(self.sources) and not bad, f"corpus.sources must be among {list(SOURCES)}, got {self.sources}")
        _require(0 < self.heldout_fraction < 1, f"corpus.heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        for name in ("max_file_bytes", "max_line_chars", "train_bytes", "heldout_bytes", "chunk_chars"):
            _require(getattr(self, name) > 0, f"corpus.{name} must be positive, got {getattr(self, name)}")
        _require(self.max_chunk_chars >= self.chunk_chars,
                 f"corpus.max_chunk_chars={self.max_chunk_chars} must be >= corpus.chunk_chars={self.chunk_chars}")


@dataclass
class TokenizerConfig:
    """A Llama 2-style SentencePiece BPE trained on training files, plus Code Llama's 16 pieces."""

    vocab_size: int = 2048
    """Pieces in all, the 16 Code Llama pieces included (the BPE is trained to vocab_size - 16)."""
    sample_bytes: int = 4_000_000
    """Training-file text the BPE is trained on (paragraphs, in file hash order)."""

    def __post_init__(self) -> None:
        _require(self.vocab_size >= 300, f"tokenizer.vocab_size must be >= 300 (bytes + pieces), got {self.vocab_size}")
        _require(self.sample_bytes > 0, f"tokenizer.sample_bytes must be positive, got {self.sample_bytes}")


@dataclass
class FimEvalConfig:
    """Held-out evaluation of the FIM experiment."""

    documents: int = 400
    """Held-out documents whose left-to-right loss is averaged."""
    loss_cases: int = 400
    """Middles whose loss is measured (PSM, SPM, prefix only)."""
    loss_max_lines: int = 8
    """A loss case's middle is 1 to this many whole lines."""
    match_cases: int = 100
    """Generation cases per kind (single-line, multi-line)."""
    multi_line_max: int = 6
    """A multi-line case's middle is 2 to this many lines."""
    max_new_tokens: int = 128
    """Generation budget cap: a case may generate 2 x its middle's tokens + 8, at most this many."""

    def __post_init__(self) -> None:
        for name in ("documents", "loss_cases", "match_cases", "loss_max_lines", "max_new_tokens"):
            _require(getattr(self, name) >= 1, f"fim.eval.{name} must be >= 1, got {getattr(self, name)}")
        _require(self.multi_line_max >= 2, f"fim.eval.multi_line_max must be >= 2, got {self.multi_line_max}")


@dataclass
class FimSection:
    """Two models, same tokens and seed: FIM at `rate` (model `fim`) and without (`no_fim`)."""

    rate: float = 0.9
    """data.fim.rate of the FIM model (Code Llama: 0.9)."""
    spm_rate: float = 0.5
    """data.fim.spm_rate (Code Llama: half PSM, half SPM)."""
    eval: FimEvalConfig = field(default_factory=FimEvalConfig)

    def __post_init__(self) -> None:
        _require(0 < self.rate <= 1, f"fim.rate must be in (0, 1], got {self.rate}")
        _require(0 <= self.spm_rate <= 1, f"fim.spm_rate must be in [0, 1], got {self.spm_rate}")


@dataclass
class LcftEvalConfig:
    """Held-out evaluation of the LCFT experiment."""

    length_factors: list = field(default_factory=lambda: [0.5, 1, 2, 4, 8, 16])
    """Evaluation context lengths as multiples of the base training length L."""
    files: int = 16
    """Held-out files at least max(length_factors) * L + 1 tokens long; their first
    max(length_factors) * L tokens are scored at every length."""
    retrieval_factors: list = field(default_factory=lambda: [0.25, 0.5, 1, 2, 4, 8, 15])
    """Key-retrieval distances (tokens between the key and the question) as multiples of L."""
    retrieval_prompts: int = 24
    """Prompts per distance; 0 skips key retrieval."""

    def __post_init__(self) -> None:
        _require(bool(self.length_factors) and all(f > 0 for f in self.length_factors),
                 f"lcft.eval.length_factors must be positive numbers, got {self.length_factors}")
        _require(self.files >= 1, f"lcft.eval.files must be >= 1, got {self.files}")
        _require(all(f > 0 for f in self.retrieval_factors),
                 f"lcft.eval.retrieval_factors must be positive, got {self.retrieval_factors}")
        _require(self.retrieval_prompts >= 0, f"lcft.eval.retrieval_prompts must be >= 0, got {self.retrieval_prompts}")


@dataclass
class LcftSection:
    """A base model at L = run's data.seq_length with θ of the run's model; two continuations at
    `length_factor` * L, one with θ `new_rope_base`, one keeping the base's θ."""

    length_factor: int = 4
    """LCFT sequence length over L (Code Llama: 16,384 / 4,096)."""
    new_rope_base: float = 1_000_000.0
    """θ of the first continuation (Code Llama §2.4: 10^6)."""
    run: dict = field(default_factory=dict)
    """Run-config keys the continuations change (learning rate, steps, batch...); the sequence
    length, θ and the checkpoint to start from are set by the experiment."""
    eval: LcftEvalConfig = field(default_factory=LcftEvalConfig)

    def __post_init__(self) -> None:
        _require(self.length_factor >= 2, f"lcft.length_factor must be >= 2, got {self.length_factor}")
        _require(self.new_rope_base > 0, f"lcft.new_rope_base must be positive, got {self.new_rope_base}")


@dataclass
class ExperimentConfig:
    experiment: str = "fim"
    """`fim` or `lcft`."""
    seed: int = 1234
    """Corpus split, tokenizer sample, data order and weights all derive from it."""
    nproc: int = 2
    """Data-parallel gloo ranks per training run (torchrun --nproc-per-node)."""
    threads_per_rank: int = 1
    """OMP_NUM_THREADS of each rank."""
    eval_threads: int = 2
    """torch threads of the evaluation (one process, after training)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    run: dict = field(default_factory=dict)
    """The megacode run config (RunConfig keys) every model of the experiment shares."""
    fim: FimSection = field(default_factory=FimSection)
    lcft: LcftSection = field(default_factory=LcftSection)

    def __post_init__(self) -> None:
        _require(self.experiment in EXPERIMENTS, f"experiment must be one of {EXPERIMENTS}, got {self.experiment!r}")
        _require(self.nproc >= 1 and self.threads_per_rank >= 1 and self.eval_threads >= 1,
                 f"nproc, threads_per_rank, eval_threads must be >= 1, got {self.nproc}, {self.threads_per_rank}, "
                 f"{self.eval_threads}")
        self.run_config()  # megacode's own checks, before anything runs

    def run_config(self, *overrides: dict) -> RunConfig:
        """The shared run config with `overrides` (nested dicts) applied, validated by megacode."""
        return build_dataclass(RunConfig, self.run_dict(*overrides), "run")

    def run_dict(self, *overrides: dict) -> dict:
        tree = copy.deepcopy(self.run)
        for extra in overrides:
            merge(tree, extra)
        return tree


def config_path(experiment: str, scale: str) -> Path:
    return CONFIG_DIR / f"{experiment}_{scale}.yaml"


def load_experiment(path: str | Path, overrides: Iterable[str] = (), experiment: Optional[str] = None
                    ) -> ExperimentConfig:
    """The experiment config at `path` with `key=value` overrides; `experiment` must match it."""
    cfg = load_dataclass(ExperimentConfig, path, overrides)
    if experiment is not None and cfg.experiment != experiment:
        raise ConfigError(f"{path}: is a {cfg.experiment!r} experiment config, not {experiment!r}")
    return cfg

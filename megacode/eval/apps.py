"""APPS (Hendrycks et al. 2021, arXiv 2105.09938): programming problems judged by their test cases.

Rows are the `codeparrot/apps` dataset as JSONL (one problem a line): `problem_id`, `question`,
`input_output` (a JSON string, or object, with `inputs`, `outputs` and, for call-based problems,
`fn_name`), `difficulty` (introductory, interview, competition), `starter_code`, `solutions`.
The prompt is APPS's own (`eval/generate_gpt_codes.py`): "\\nQUESTION:\\n" + question, the starter
code on a new line, "\\nUse Call-Based format" or "\\nUse Standard Input format", "\\nANSWER:\\n";
generation stops at "\\nQUESTION", "\\n---" or "\\nANSWER" (bigcode-evaluation-harness). Code Llama
(Table 3) reports 2-shot pass@5/10/100 (temperature 0.6, top-p 0.95) without filtering by the
prompt's examples; `shots` puts solved problems before the question in the same layout.

Every test case is its own sandbox run with a per-case limit (APPS: 4 s). Standard-input
programs run as a script with the case on stdin; call-based ones are called with the case's
arguments, on an instance of `Solution` when the code defines that class. The program starts with
the imports APPS's `testing_util.py` prepends, less numpy (the sandbox runs the standard library).
A case passes when the output matches under APPS's checks in their order: equal after stripping,
equal line by line after stripping lines (blank ones dropped), or all numbers within numpy's
`allclose` tolerance; for call-based, result == expected or == expected[0], tuples as lists. APPS's
last resort, comparing outputs as unordered sets of tokens, is not applied (it accepts output in
any order). Metrics per difficulty, as `eval/test_one_solution.py` prints them: strict accuracy
(all cases of a problem pass) and test case average (fraction of a problem's cases passing),
both averaged over samples, and pass@k with a sample passing when all its cases pass.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from megacode.eval.generate import cut_at_stop
from megacode.eval.passk import mean_pass_at_k
from megacode.eval.problems import Problem, jsonl_rows
from megacode.eval.sandbox import Sandbox
from megacode.eval.sandbox_config import CommandStep, SandboxJob, SandboxResult

STOP = ["\nQUESTION", "\n---", "\nANSWER"]
DIFFICULTIES = ("introductory", "interview", "competition")
CASE_TIMEOUT_S = 4.0
HEADER = ("import sys\nimport time\nimport itertools\nfrom itertools import accumulate, product, permutations, "
          "combinations\nimport collections\nfrom collections import Counter, OrderedDict, deque, defaultdict, "
          "ChainMap\nfrom functools import lru_cache\nimport math\nfrom math import sqrt, sin, cos, tan, ceil, fabs, "
          "floor, gcd, exp, log, log2\nimport fractions\nfrom typing import List, Tuple\nimport random\nimport heapq\n"
          "from heapq import *\n")


@dataclass
class AppsProblem:
    problem_id: str
    question: str
    difficulty: str
    inputs: list
    outputs: list
    fn_name: Optional[str] = None
    starter_code: str = ""
    solutions: Optional[list] = None

    def prompt(self) -> str:
        text = "\nQUESTION:\n" + self.question + (("\n" + self.starter_code) if self.starter_code else "")
        text += "\nUse Call-Based format" if self.fn_name else "\nUse Standard Input format"
        return text + "\nANSWER:\n"


def read_problems(path: Path) -> list[AppsProblem]:
    """APPS rows of a JSONL(.gz) file; errors name the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"APPS problems file not found: {path}")
    problems, seen = [], {}
    for number, row in jsonl_rows(path):
        where = f"{path}:{number}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: a problem row must be a JSON object, got {type(row).__name__}")
        if not isinstance(row.get("problem_id"), (int, str)) or isinstance(row.get("problem_id"), bool):
            raise ValueError(f"{where}: field 'problem_id' must be an integer or string, got {row.get('problem_id')!r:.40}")
        if not isinstance(row.get("question"), str):
            raise ValueError(f"{where}: field 'question' must be a string")
        if row.get("difficulty") not in DIFFICULTIES:
            raise ValueError(f"{where}: field 'difficulty' must be one of {', '.join(DIFFICULTIES)}, "
                             f"got {row.get('difficulty')!r:.40}")
        io = row.get("input_output")
        try:
            io = json.loads(io) if isinstance(io, str) else io
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: field 'input_output' is not valid JSON ({err.msg})") from None
        if not isinstance(io, dict) or not isinstance(io.get("inputs"), list) or not isinstance(io.get("outputs"), list) \
                or len(io["inputs"]) != len(io["outputs"]) or not io["inputs"]:
            raise ValueError(f"{where}: field 'input_output' needs equally long, non-empty lists 'inputs' and 'outputs'")
        fn_name = io.get("fn_name") or None
        if fn_name is not None and not (isinstance(fn_name, str) and fn_name.isidentifier()):
            raise ValueError(f"{where}: field 'input_output.fn_name' must be an identifier, got {fn_name!r:.40}")
        if fn_name is None and not all(isinstance(x, (str, list)) for x in io["inputs"] + io["outputs"]):
            raise ValueError(f"{where}: standard-input cases need string (or list of lines) inputs and outputs")
        starter = row.get("starter_code") or ""
        if not isinstance(starter, str):
            raise ValueError(f"{where}: field 'starter_code' must be a string")
        solutions = row.get("solutions")
        solutions = json.loads(solutions) if isinstance(solutions, str) and solutions else solutions
        key = str(row["problem_id"])
        if key in seen:
            raise ValueError(f"{where}: problem_id {key} already on line {seen[key]}")
        seen[key] = number
        problems.append(AppsProblem(key, row["question"], row["difficulty"], io["inputs"], io["outputs"], fn_name,
                                    starter, solutions if isinstance(solutions, list) else None))
    if not problems:
        raise ValueError(f"{path}: no APPS problems")
    return problems


def shots_prefix(shots: Sequence[AppsProblem]) -> str:
    """Solved examples in the prompt's own layout, each followed by its first solution."""
    parts = []
    for shot in shots:
        if not shot.solutions:
            raise ValueError(f"APPS shot problem {shot.problem_id} has no solutions")
        parts.append(shot.prompt() + shot.solutions[0].rstrip() + "\n")
    return "".join(parts)


def generation_problems(problems: Sequence[AppsProblem], prefix: str = "") -> list[Problem]:
    return [Problem(p.problem_id, prefix + p.prompt(), "", "", list(STOP)) for p in problems]


def read_samples(path: Path, problems: Sequence[AppsProblem]) -> list[tuple[AppsProblem, str]]:
    """Samples file rows {"problem_id", "completion"}; errors name the file, line and field."""
    by_id = {p.problem_id: p for p in problems}
    samples = []
    for number, row in jsonl_rows(Path(path)):
        if not isinstance(row, dict) or not isinstance(row.get("completion"), str):
            raise ValueError(f"{path}:{number}: field 'completion' must be a string")
        key = str(row.get("problem_id"))
        if key not in by_id:
            raise ValueError(f"{path}:{number}: field 'problem_id': {row.get('problem_id')!r:.40} is not an APPS "
                             "problem of the problems file")
        samples.append((by_id[key], row["completion"]))
    if not samples:
        raise ValueError(f"{path}: no samples")
    return samples


def case_job(problem: AppsProblem, code: str, index: int, python: str, timeout_s: float) -> SandboxJob:
    """One test case of one sample as a sandbox run."""
    program = HEADER + cut_at_stop(code, STOP)
    if problem.fn_name is None:
        stdin = _text(problem.inputs[index])
        steps = [CommandStep("run", [python, "-I", "-S", "-B", "solution.py"], timeout_s, stdin=stdin)]
        return SandboxJob("", timeout_s=timeout_s + 5.0, files={"solution.py": program}, steps=steps)
    args, expected = json.dumps(problem.inputs[index]), json.dumps(problem.outputs[index])
    call = f"Solution().{problem.fn_name}" if "class Solution" in code else problem.fn_name
    test = (f"import json as _json\n_result = {call}(*_json.loads({args!r}))\n_expected = _json.loads({expected!r})\n"
            "if isinstance(_result, tuple):\n    _result = list(_result)\n"
            "assert _result == _expected or (isinstance(_expected, list) and len(_expected) > 0 "
            "and _result == _expected[0]), 'wrong answer'\n")
    return SandboxJob(program, test, timeout_s, "__solution__")


def case_passed(problem: AppsProblem, index: int, result: SandboxResult) -> bool:
    if not result.passed:
        return False
    return problem.fn_name is not None or outputs_match(result.stdout_tail, _text(problem.outputs[index]))


def outputs_match(output: str, expected: str) -> bool:
    """APPS's standard-input comparisons (testing_util.py), the set-based last resort excepted."""
    if output.strip() == expected.strip():
        return True
    got = [line.strip() for line in output.splitlines() if line.strip()]
    want = [line.strip() for line in expected.splitlines() if line.strip()]
    if got == want:
        return True
    tokens, expected_tokens = output.split(), expected.split()
    try:
        numbers = [float(t) for t in tokens]
        wanted = [float(t) for t in expected_tokens]
    except ValueError:
        return False
    return len(numbers) == len(wanted) and all(
        math.isclose(a, b, rel_tol=0.0, abs_tol=1e-8 + 1e-5 * abs(b)) for a, b in zip(numbers, wanted))  # np.allclose


def evaluate(samples: Sequence[tuple[AppsProblem, str]], sandbox: Sandbox, ks: Sequence[int],
             case_timeout_s: float = CASE_TIMEOUT_S) -> tuple[list[list[bool]], dict]:
    """Per sample, the pass/fail of each of its problem's cases; and the metrics per difficulty
    (and "all"): problems, samples, strict_accuracy, test_case_average, pass@k."""
    python = sandbox.isolation.python
    jobs, owners = [], []
    for s, (problem, code) in enumerate(samples):
        for index in range(len(problem.inputs)):
            jobs.append(case_job(problem, code, index, python, case_timeout_s))
            owners.append((s, index))
    results = sandbox.run_many(jobs, desc="apps tests")
    cases: list[list[bool]] = [[False] * len(p.inputs) for p, _ in samples]
    for (s, index), result in zip(owners, results):
        cases[s][index] = case_passed(samples[s][0], index, result)
    return cases, metrics(samples, cases, ks)


def metrics(samples: Sequence[tuple[AppsProblem, str]], cases: Sequence[list[bool]], ks: Sequence[int]) -> dict:
    groups: dict[str, list[int]] = defaultdict(list)
    for s, (problem, _) in enumerate(samples):
        groups[problem.difficulty].append(s)
        groups["all"].append(s)
    table = {}
    for name in [*[d for d in DIFFICULTIES if d in groups], "all"]:
        members = groups[name]
        counts: dict[str, list[int]] = {}
        for s in members:
            entry = counts.setdefault(samples[s][0].problem_id, [0, 0])
            entry[0] += 1
            entry[1] += int(all(cases[s]))
        table[name] = {
            "problems": len(counts), "samples": len(members),
            "strict_accuracy": sum(all(cases[s]) for s in members) / len(members),
            "test_case_average": sum(sum(cases[s]) / len(cases[s]) for s in members) / len(members),
            "pass@k": mean_pass_at_k([tuple(c) for c in counts.values()], ks)}
    return table


def summary_table(table: dict, ks: Sequence[int]) -> str:
    ks = sorted(set(ks))
    header = ["difficulty", "problems", "samples", "strict accuracy", "test case average", *[f"pass@{k}" for k in ks]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in table.items():
        cells = [name, str(m["problems"]), str(m["samples"]), f"{100 * m['strict_accuracy']:.2f}",
                 f"{100 * m['test_case_average']:.2f}",
                 *[f"{100 * m['pass@k'][k]:.2f}" if k in m["pass@k"] else "n/a" for k in ks]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _text(value) -> str:
    """A case's input or output: APPS stores a string, sometimes a list of lines."""
    return "\n".join(value) if isinstance(value, list) else value

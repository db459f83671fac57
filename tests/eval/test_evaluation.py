"""HumanEval and MBPP evaluation through the sandbox: reference solutions pass, empty bodies do
not, pass@k of scored files equals the estimator on the constructed counts, generation from a
Hugging Face directory runs end to end, and the CLI's unavailable modes say what is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from megacode.config.schema import ConfigError
from megacode.eval.config import EvalConfig
from megacode.eval.generate import GenerationSettings, HFGenerator, cut_at_stop
from megacode.eval.humaneval import canonical_solutions, load_humaneval
from megacode.eval.mbpp import load_mbpp, reference_solutions
from megacode.eval.passk import pass_at_k
from megacode.eval.problems import Sample, read_samples, score
from megacode.eval.runner import run_benchmark
from megacode.eval.sandbox import Sandbox
from megacode.eval.sandbox_config import SandboxConfig

REPO = Path(__file__).resolve().parents[2]
EVALUATE = [sys.executable, str(REPO / "tools" / "evaluate.py")]


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(SandboxConfig(timeout_s=20, workers=2))


def write_samples(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps({"task_id": t, "completion": c}) + "\n" for t, c in rows))
    return path


def test_every_canonical_humaneval_solution_passes_via_cli(tmp_path):
    canonical = canonical_solutions()
    assert len(canonical) == 164
    samples = write_samples(tmp_path / "canonical.jsonl", canonical.items())
    done = subprocess.run(EVALUATE + ["humaneval", "--samples", str(samples), "--workers", "2", "--timeout", "20"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"pass@1": 1.0}
    rows = [json.loads(line) for line in (tmp_path / "canonical.jsonl_results.jsonl").read_text().splitlines()]
    assert len(rows) == 164 and all(r["passed"] and r["result"] == "passed" for r in rows)


def test_empty_bodies_pass_nothing(sandbox):
    problems = load_humaneval()
    scored = score(problems, [Sample(p.task_id, "    pass\n") for p in problems], sandbox, [1])
    assert scored.pass_at == {1: 0.0}
    assert all(r.status == "failed" for r in scored.results)  # failed asserts, not crashes or time-outs


def test_pass_at_k_of_a_samples_file_matches_constructed_counts(tmp_path):
    canonical = canonical_solutions()
    task_ids = sorted(canonical, key=lambda t: int(t.split("/")[1]))[:5]
    passing = {task_ids[0]: 0, task_ids[1]: 1, task_ids[2]: 2, task_ids[3]: 3, task_ids[4]: 4}
    rows = []
    for task_id, good in passing.items():  # 4 samples each: `good` canonical ones, the rest empty bodies
        rows += [(task_id, canonical[task_id] if i < good else "    pass\n") for i in range(4)]
    samples = write_samples(tmp_path / "mixed.jsonl", rows)
    done = subprocess.run(EVALUATE + ["humaneval", "--samples", str(samples), "--k", "1,2,4,8", "--partial",
                                      "--workers", "2", "--timeout", "20"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    for k in (1, 2, 4):
        assert printed[f"pass@{k}"] == pytest.approx(sum(pass_at_k(4, c, k) for c in passing.values()) / 5, abs=1e-6)
    assert "pass@8" not in printed and "not reported: pass@8" in done.stdout


def test_samples_file_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "HumanEval/0", "completion": "x"}\n{"task_id": 3}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: needs string fields 'task_id' and 'completion'"):
        read_samples(bad)
    partial = write_samples(tmp_path / "partial.jsonl", [("HumanEval/0", "    pass\n")])
    done = subprocess.run(EVALUATE + ["humaneval", "--samples", str(partial)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "163 of 164 humaneval problems have no sample" in done.stderr
    unknown = write_samples(tmp_path / "unknown.jsonl", [("HumanEval/999", "    pass\n")])
    done = subprocess.run(EVALUATE + ["humaneval", "--samples", str(unknown), "--partial"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "task_id 'HumanEval/999', which is not a humaneval problem" in done.stderr


MBPP_ROWS = [
    (2, "Write a function to add two numbers.", "def add(a, b):\r\n    return a + b", ["assert add(1, 2) == 3"]),
    (3, "Write a function to negate a number.", "def neg(x):\r\n    return -x", ["assert neg(4) == -4", "assert neg(0) == 0"]),
    (4, "Write a function to double a list.", "def dbl(xs):\r\n    return xs + xs", ["assert dbl([1]) == [1, 1]"]),
    (11, "Write a function to find the largest of three numbers.", "def big(a, b, c):\r\n    return max(a, b, c)",
     ["assert big(1, 5, 3) == 5", "assert big(-1, -5, -3) == -1"]),
    (12, "Write a function to count vowels in a string.",
     "def vowels(s):\r\n    return sum(ch in 'aeiou' for ch in s)", ["assert vowels('banana') == 3"]),
    (13, "Write a function to reverse words.", "def rev(s):\r\n    return ' '.join(reversed(s.split()))",
     ["assert rev('a b c') == 'c b a'"]),
]


@pytest.fixture()
def mbpp_file(tmp_path) -> Path:
    path = tmp_path / "mbpp.jsonl"
    path.write_text("".join(json.dumps({"task_id": i, "text": t, "code": c, "test_list": tests, "test_setup_code": "",
                                        "challenge_test_list": []}) + "\n" for i, t, c, tests in MBPP_ROWS))
    return path


def test_mbpp_prompt_is_the_papers_three_shot_format(mbpp_file):
    problems = load_mbpp(mbpp_file)
    assert [p.task_id for p in problems] == ["MBPP/11", "MBPP/12", "MBPP/13"]  # shots are not evaluated
    expected = (
        "You are an expert Python programmer, and here is your task: Write a function to add two numbers. "
        "Your code should pass these tests:\n\nassert add(1, 2) == 3\n[BEGIN]\ndef add(a, b):\n    return a + b\n[DONE]\n"
        "You are an expert Python programmer, and here is your task: Write a function to negate a number. "
        "Your code should pass these tests:\n\nassert neg(4) == -4\nassert neg(0) == 0\n[BEGIN]\ndef neg(x):\n"
        "    return -x\n[DONE]\n"
        "You are an expert Python programmer, and here is your task: Write a function to double a list. "
        "Your code should pass these tests:\n\nassert dbl([1]) == [1, 1]\n[BEGIN]\ndef dbl(xs):\n    return xs + xs\n"
        "[DONE]\n"
        "You are an expert Python programmer, and here is your task: Write a function to find the largest of three "
        "numbers. Your code should pass these tests:\n\nassert big(1, 5, 3) == 5\nassert big(-1, -5, -3) == -1\n"
        "[BEGIN]\n")
    assert problems[0].prompt == expected
    assert problems[0].stop == ["[DONE]"]


def test_mbpp_reference_solutions_pass_and_wrong_ones_fail(mbpp_file, sandbox, tmp_path):
    problems = load_mbpp(mbpp_file)
    reference = reference_solutions(mbpp_file)
    scored = score(problems, [Sample(p.task_id, reference[p.task_id]) for p in problems], sandbox, [1])
    assert scored.pass_at == {1: 1.0}
    wrong = write_samples(tmp_path / "wrong.jsonl", [(p.task_id, "def big(a, b, c):\n    return a\n") for p in problems])
    done = subprocess.run(EVALUATE + ["mbpp", "--mbpp", str(mbpp_file), "--samples", str(wrong), "--workers", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"pass@1": 0.0}


class PlantedGenerator:
    """A `TextGenerator` whose completions are given: the canonical body for every other
    problem, a wrong one for the rest, so the expected pass@1 is known exactly."""

    def __init__(self, by_prompt: dict[str, str]):
        self.by_prompt = by_prompt
        self.calls = []

    def generate(self, prompts, stop, num_samples, desc="generate"):
        self.calls.append((len(prompts), tuple(stop), num_samples))
        return [[self.by_prompt[p]] * num_samples for p in prompts]


def test_run_benchmark_with_planted_completions(tmp_path):
    problems = load_humaneval()[:6]
    canonical = canonical_solutions()
    planted = {p.prompt: canonical[p.task_id] if i % 2 == 0 else "    return None\n" for i, p in enumerate(problems)}
    cfg = EvalConfig(limit=6, output_dir=str(tmp_path / "out"), sandbox=SandboxConfig(timeout_s=20, workers=2))
    generator = PlantedGenerator(planted)
    scored = run_benchmark(cfg, generator)
    assert generator.calls == [(6, tuple(problems[0].stop), 1)]
    assert scored.pass_at == {1: 0.5}
    per_problem = [json.loads(line) for line in (tmp_path / "out" / "per_problem.jsonl").read_text().splitlines()]
    assert [row["c"] for row in per_problem] == [1, 0, 1, 0, 1, 0]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["pass@k"] == {"1": 0.5}
    assert "| humaneval | 6 | 6 | 3 | 3 | 50.00 |" in (tmp_path / "out" / "summary.md").read_text()


def test_hf_model_end_to_end_via_cli(tiny_model_dir, tmp_path):
    out = tmp_path / "tiny-eval"
    done = subprocess.run(EVALUATE + ["humaneval", "--config", str(REPO / "configs" / "eval" / "tiny.yaml"),
                                      "--model", str(tiny_model_dir), "--limit", "3", "--out", str(out),
                                      "generation.max_new_tokens=12"],
                          capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                            "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [s["task_id"] for s in samples] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert [r["completion"] for r in results] == [s["completion"] for s in samples]
    passed = sum(r["passed"] for r in results)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"pass@1": pytest.approx(passed / 3)}


def test_hf_generator_keeps_the_completion_text_exact(tiny_model_dir):
    generator = HFGenerator(tiny_model_dir, GenerationSettings(max_new_tokens=10, batch_size=2, device="cpu"))
    prompts = ["def f(x):\n    return", "x = 1"]
    greedy = generator.generate(prompts, stop=[], num_samples=1)
    again = generator.generate(prompts[::-1], stop=[], num_samples=1)
    assert greedy == again[::-1]  # greedy is deterministic whatever the batch order
    for prompt, (completion,) in zip(prompts, greedy):
        ids = generator.tokenizer(prompt + completion)["input_ids"]
        assert generator.tokenizer.decode(ids, skip_special_tokens=True) == prompt + completion
    stop = [greedy[0][0][3:5]] if len(greedy[0][0]) >= 5 else []
    if stop:  # stopping cuts the completion before the stop string
        assert generator.generate(prompts[:1], stop=stop, num_samples=1)[0][0] == cut_at_stop(greedy[0][0], stop)


def test_cut_at_stop():
    assert cut_at_stop("    return x\ndef g():\n", ["\ndef", "\nclass"]) == "    return x"
    assert cut_at_stop("a[DONE]b[DONE]", ["[DONE]"]) == "a"
    assert cut_at_stop("no stop", ["\n#"]) == "no stop"


def test_config_errors():
    with pytest.raises(ConfigError, match="num_samples=10 with temperature 0"):
        GenerationSettings(num_samples=10)
    with pytest.raises(ConfigError, match="pass@10 needs generation.num_samples >= 10, got 1"):
        EvalConfig(model="m", ks=[1, 10])
    with pytest.raises(ConfigError, match="benchmark mbpp needs mbpp_path"):
        EvalConfig(benchmark="mbpp")


def test_unavailable_modes_say_what_is_missing(tmp_path):
    done = subprocess.run(EVALUATE + ["infill", "--model", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--samples PROBLEMS.jsonl" in done.stderr  # infill needs a problems file
    done = subprocess.run(EVALUATE + ["humaneval", "--megacode-checkpoint", str(tmp_path / "none"),
                                      "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and str(tmp_path / "none") in done.stderr  # names the missing checkpoint

"""Self-instruct: the real pipeline (prompts, parsing, dedup, sandbox execution, selection,
resume, counts) driven by generators whose outputs are planted, and by tiny HF models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megacode.config.schema import ConfigError
from megacode.eval.generate import GenerationSettings, cut_at_stop
from megacode.eval.sandbox import Sandbox
from megacode.eval.sandbox_config import SandboxConfig
from megacode.selfinstruct import prompts
from megacode.selfinstruct.config import SelfInstructConfig
from megacode.selfinstruct.pipeline import count, parse_stages, run
from megacode.selfinstruct.store import read_jsonl

REPO = Path(__file__).resolve().parents[2]

ROUNDS = [
    "1. Write a function add(a, b) that returns a + b.\n2. Write a function is_even(n) that tells whether n is even.\n"
    "3) Write a function reverse(s) that reverses a string s,\n   keeping all of its characters.\n",
    "Sure! Here are the questions:\n1. Write a function add(a, b) that returns a + b.\n"
    "2. Write a function square(x) returning x squared.\n4. short\n\n5. Write a function with no tests at all please.\n",
]
ADD, EVEN, REVERSE, SQUARE, NO_TESTS = (
    "Write a function add(a, b) that returns a + b.", "Write a function is_even(n) that tells whether n is even.",
    "Write a function reverse(s) that reverses a string s, keeping all of its characters.",
    "Write a function square(x) returning x squared.", "Write a function with no tests at all please.")
TESTS = {
    ADD: "[TESTS]\n# Test case 1:\nassert add(1, 2) == 3\n# Test case 2:\nassert add(-1, 1) == 0\n[/TESTS]\ntrailing",
    EVEN: "[TESTS]\n# Test case 1:\nassert is_even(2)\n# Test case 2:\nassert not is_even(3)\n",  # no closing tag
    REVERSE: "[TESTS]\n# Test case 1:\nassert reverse('abc') == 'cba'\n[/TESTS]",
    SQUARE: "[TESTS]\n# Test case 1:\nassert square(3) == 9\n# Test case 2:\nassert square(-2) ==\n",  # cut off
    NO_TESTS: "I cannot write tests for that.",
}
SOLUTIONS = {
    ADD: ["[PYTHON]\ndef add(a, b):\n    return a - b\n[/PYTHON]", "[PYTHON]\ndef add(a, b):\n    return a + b\n",
          "[PYTHON]\ndef add(a, b):\n    return b + a\n[/PYTHON]"],
    EVEN: ["no code block here", "[PYTHON]\nimport sys\nsys.exit(0)\n", "[PYTHON]\ndef is_even(n):\n    return n % 2 == 0\n"],
    REVERSE: ["[PYTHON]\ndef reverse(s):\n    while True:\n        pass\n", "[PYTHON]\nimport os\nos._exit(0)\n",
              "[PYTHON]\ndef reverse(s):\n    return s\n"],
    SQUARE: ["[PYTHON]\ndef square(x):\n    return x * x\n", "[PYTHON]\ndef square(x):\n    return x ** 2\n",
             "[PYTHON]\ndef square(x):\n    return abs(x) * 3\n"],  # passes the one surviving test: weak tests
}


class PlantedGenerator:
    """A `TextGenerator` answering each prompt with given text (found by the question inside
    the prompt) and applying the stop strings as a model's generation would."""

    def __init__(self):
        self.calls: list[tuple[str, int, int]] = []

    def generate(self, prompt_list, stop, num_samples, desc="generate", seed=None):
        out = []
        for prompt in prompt_list:
            question = prompt.rsplit("Problem: ", 1)[-1].split("\n")[0]
            if prompt == prompts.questions_prompt(3):
                texts = [ROUNDS[(seed + i) % len(ROUNDS)] for i in range(num_samples)]
                kind = "questions"
            elif "[TESTS] and [/TESTS]" in prompt:
                texts, kind = [TESTS[question]] * num_samples, "tests"
            else:
                assert f"Test: {prompts.parse_tests(TESTS[question])[0]}\n" in prompt  # one example test
                texts, kind = SOLUTIONS[question][:num_samples], "solutions"
            out.append([cut_at_stop(t, stop) for t in texts])
            self.calls.append((kind, num_samples, seed))
        return out


def planted_config(out: Path, **changes) -> SelfInstructConfig:
    values = dict(output_dir=str(out), rounds=2, questions_per_prompt=3, tests_per_question=2, chunk_size=2,
                  solution_generation=GenerationSettings(temperature=0.8, num_samples=3),
                  question_generation=GenerationSettings(temperature=0.8, batch_size=1),
                  sandbox=SandboxConfig(timeout_s=1.5, workers=2))
    values.update(changes)
    return SelfInstructConfig(**values)


EXPECTED = {
    "question_rounds": 2, "questions_generated": 6, "questions_unique": 5, "questions_with_tests": 4, "tests": 6,
    "solutions_generated": 12, "solutions_parsed": 11, "solutions_executed": 11, "solutions_passed": 6,
    "solutions_failed": 4, "solutions_timed_out": 1, "solutions_crashed": 0, "questions_with_passing_solution": 3,
    "triplets": 3, "dialogs": 3,
}


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(SandboxConfig(timeout_s=1.5, workers=2))  # the planted endless loop costs this much


def test_planted_pipeline_keeps_only_solutions_that_passed(tmp_path, sandbox):
    generator = PlantedGenerator()
    counts = run(planted_config(tmp_path), question_generator=generator, code_generator=generator, sandbox=sandbox)
    assert counts == EXPECTED
    assert json.loads((tmp_path / "counts.json").read_text()) == counts
    assert [r["question"] for r in read_jsonl(tmp_path / "questions.jsonl")] == [ADD, EVEN, REVERSE, SQUARE, NO_TESTS]
    executions = {r["qid"]: r for r in read_jsonl(tmp_path / "executions.jsonl")}
    assert [executions[q]["statuses"] for q in range(4)] == [
        ["failed", "passed", "passed"], ["unparsed", "failed", "passed"], ["timed_out", "failed", "failed"],
        ["passed", "passed", "passed"]]
    assert [executions[q]["kept"] for q in range(5)] == [1, 2, None, 0, None]
    assert "before the tests completed" in executions[1]["reasons"][1]  # sys.exit(0) is not a pass
    triplets = read_jsonl(tmp_path / "triplets.jsonl")
    assert [(t["question"], t["solution"]) for t in triplets] == [
        (ADD, "def add(a, b):\n    return a + b"), (EVEN, "def is_even(n):\n    return n % 2 == 0"),
        (SQUARE, "def square(x):\n    return x * x")]
    assert triplets[3 - 1]["tests"] == ["assert square(3) == 9"]  # the cut-off assert was dropped
    # Every kept solution passes its tests when run again.
    for t in triplets:
        assert sandbox.run(t["solution"], "\n".join(t["tests"])).passed


def test_dialog_records_have_the_instruct_format(tmp_path, sandbox):
    generator = PlantedGenerator()
    run(planted_config(tmp_path, system_prompt="Answer in Python."), question_generator=generator,
        code_generator=generator, sandbox=sandbox)
    lines = (tmp_path / "dialogs.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first == {"messages": [
        {"role": "system", "content": "Answer in Python."},
        {"role": "user", "content": ADD},
        {"role": "assistant", "content": "[PYTHON]\ndef add(a, b):\n    return a + b\n[/PYTHON]\n[TESTS]\n"
                                         "# Test case 1:\nassert add(1, 2) == 3\n# Test case 2:\nassert add(-1, 1) == 0\n"
                                         "[/TESTS]"}],
        "source": "self-instruct"}
    for line in lines:
        row = json.loads(line)
        assert set(row) == {"messages", "source"} and row["source"] == "self-instruct"
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in row["messages"])


def test_stages_resume_without_redoing_work(tmp_path, sandbox):
    generator = PlantedGenerator()
    cfg = planted_config(tmp_path)
    run(planted_config(tmp_path, rounds=1), ["questions"], question_generator=generator)
    run(cfg, ["questions", "dedup", "generate"], question_generator=generator, code_generator=generator)
    assert [c for c in generator.calls if c[0] == "questions"] == [("questions", 1, 0), ("questions", 1, 1)]
    # A crash in the middle of writing the last chunk of candidates: its last line is cut short.
    candidates = tmp_path / "candidates.jsonl"
    text = candidates.read_text()
    cut = text.rstrip("\n").rfind("\n") + 10
    candidates.write_text(text[:cut])
    generator.calls.clear()
    counts = run(cfg, ["generate", "execute", "write"], question_generator=generator, code_generator=generator,
                 sandbox=sandbox)
    assert counts == EXPECTED
    # Only the last question (qid 4, alone in the resumed chunk) was generated again: it has no tests.
    assert generator.calls == [("tests", 1, 10_000_000 + 4)]
    assert run(cfg, ["execute", "write"], sandbox=sandbox) == EXPECTED  # nothing left to do, nothing loaded


def test_parsers():
    assert prompts.parse_questions(ROUNDS[0]) == [ADD, EVEN, REVERSE]
    assert prompts.parse_tests("[TESTS]\nassert f(1) == (\n  2)\nx = 3\nassert g()\n[/TESTS]") == ["assert f(1) == (\n  2)",
                                                                                                 "assert g()"]
    assert prompts.parse_tests("no block") == []
    assert prompts.parse_solution("text [PYTHON]\ncode()\n[/PYTHON] more") == "code()"
    assert prompts.parse_solution("[PYTHON]\n\n") is None
    assert prompts.tests_prompt("Do X.", 5).endswith("[INST] Problem: Do X.\n[/INST]\n")
    assert "write 5 tests" in prompts.tests_prompt("Do X.", 5)


def test_config_and_stage_errors(tmp_path):
    with pytest.raises(ConfigError, match="chunk_size must be an integer >= 1, got 0"):
        SelfInstructConfig(chunk_size=0)
    with pytest.raises(ConfigError, match="answer_template must contain {solution}"):
        SelfInstructConfig(answer_template="{tests}")
    with pytest.raises(ValueError, match="unknown stage"):
        parse_stages("questions,compile")
    assert parse_stages("write,dedup") == ["dedup", "write"]
    with pytest.raises(FileNotFoundError, match="stage dedup needs .*questions_raw.jsonl: run the earlier stage first"):
        run(planted_config(tmp_path), ["dedup"])
    with pytest.raises(ValueError, match="question_model is not set"):
        run(planted_config(tmp_path), ["questions"])


def test_cli_with_tiny_random_models(tiny_model_dir, tiny_model_dir_b, tmp_path):
    """The whole CLI with two real (random) HF models: generation really runs; what it yields
    is mostly unparseable, and the counts must say so consistently."""
    out = tmp_path / "si"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "self_instruct.py"), "--config",
                           str(REPO / "configs" / "selfinstruct" / "tiny.yaml"), "--out", str(out),
                           f"question_model={tiny_model_dir}", f"code_model={tiny_model_dir_b}"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout)
    assert counts == json.loads((out / "counts.json").read_text()) == count(out)
    assert counts["question_rounds"] == 2
    raw = read_jsonl(out / "questions_raw.jsonl")
    assert all(isinstance(r["text"], str) and r["text"] for r in raw)  # the model wrote something
    assert counts["questions_unique"] <= counts["questions_generated"]
    assert counts["questions_with_tests"] <= counts["questions_unique"]
    assert counts["solutions_generated"] == 3 * counts["questions_with_tests"]
    assert counts["solutions_passed"] <= counts["solutions_executed"] <= counts["solutions_parsed"]
    assert counts["triplets"] == counts["dialogs"] == counts["questions_with_passing_solution"]
    for name in ("questions.jsonl", "candidates.jsonl", "executions.jsonl", "triplets.jsonl", "dialogs.jsonl"):
        assert (out / name).exists()


def test_trained_tiny_model_end_to_end(trained_selfinstruct_model_dir, tmp_path, sandbox):
    """Real HF generation that the pipeline can parse: questions (each round repeats them, so
    dedup has work), tests, and sampled solutions of which some are wrong. Kept solutions must be
    the first passing ones, and pass again when rerun."""
    from megacode.selfinstruct.pipeline import run as run_pipeline

    settings = dict(top_p=1.0, max_new_tokens=64, device="cpu")
    cfg = SelfInstructConfig(
        output_dir=str(tmp_path), question_model=str(trained_selfinstruct_model_dir),
        code_model=str(trained_selfinstruct_model_dir), rounds=2, questions_per_prompt=3, tests_per_question=3,
        chunk_size=2, question_generation=GenerationSettings(temperature=0.2, batch_size=2, **settings),
        test_generation=GenerationSettings(max_new_tokens=64, device="cpu"),  # greedy
        # Temperature 1 at the one token where the two trained answers part: right or wrong.
        solution_generation=GenerationSettings(temperature=1.0, num_samples=6, batch_size=12, **settings),
        sandbox=SandboxConfig(timeout_s=10, workers=2))
    counts = run_pipeline(cfg, sandbox=sandbox)
    assert counts["question_rounds"] == 2 and counts["questions_generated"] == 4 and counts["questions_unique"] == 2
    assert counts["questions_with_tests"] == 2 and counts["tests"] == 4 and counts["solutions_generated"] == 12
    assert 0 < counts["solutions_passed"] < counts["solutions_executed"]  # sampling gave right and wrong ones
    executions = read_jsonl(tmp_path / "executions.jsonl")
    for row in executions:
        passing = [i for i, status in enumerate(row["statuses"]) if status == "passed"]
        assert row["kept"] == (passing[0] if passing else None)
    triplets = read_jsonl(tmp_path / "triplets.jsonl")
    assert len(triplets) == counts["triplets"] == counts["questions_with_passing_solution"] >= 1
    for t in triplets:
        assert t["solution"] == "def add(a, b):\n    return a + b"
        assert sandbox.run(t["solution"], "\n".join(t["tests"])).passed

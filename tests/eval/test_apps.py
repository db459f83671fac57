"""APPS: standard-input and call-based problems, correct / wrong / slow solutions, exact metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from megacode.eval import apps
from megacode.eval.sandbox import Sandbox
from megacode.eval.sandbox_config import SandboxConfig

REPO = Path(__file__).resolve().parents[2]

STDIN_ROW = {  # introductory: read n numbers, print their sum; 3 cases
    "problem_id": 4001, "difficulty": "introductory", "starter_code": "", "url": "https://example.org/sum",
    "question": "Given n and n integers, print their sum.\n\n-----Input-----\nn, then n integers.\n",
    "input_output": json.dumps({"inputs": ["3\n1 2 3\n", "1\n-5\n", "2\n10 20\n"], "outputs": ["6\n", "-5\n", "30\n"]}),
    "solutions": json.dumps(["n = int(input())\nprint(sum(map(int, input().split())))\n"])}
CALL_ROW = {  # interview: call-based on class Solution; 4 cases, outputs wrapped as APPS stores them
    "problem_id": 4002, "difficulty": "interview", "url": "https://example.org/pairs",
    "question": "Return the number of pairs i < j with nums[i] + nums[j] == target.",
    "starter_code": "class Solution:\n    def countPairs(self, nums: List[int], target: int) -> int:\n        ",
    "input_output": json.dumps({"fn_name": "countPairs", "inputs": [[[1, 2, 3, 4], 5], [[1, 1, 1], 2], [[], 0], [[5], 5]],
                                "outputs": [[2], [3], [0], [0]]})}
FLOAT_ROW = {  # competition: a float answer judged within allclose's tolerance; 2 cases
    "problem_id": 4003, "difficulty": "competition", "starter_code": "",
    "question": "Print the average of the integers on the line.",
    "input_output": {"inputs": ["1 2\n", "1 1 2\n"], "outputs": ["1.5\n", "1.3333333333\n"]}}

CORRECT = {
    4001: "import sys\ndata = sys.stdin.read().split()\nprint(sum(int(x) for x in data[1:]))\n",
    4002: "class Solution:\n    def countPairs(self, nums, target):\n        return sum(1 for i in range(len(nums)) "
          "for j in range(i + 1, len(nums)) if nums[i] + nums[j] == target)\n",
    4003: "xs = list(map(int, input().split()))\nprint(sum(xs) / len(xs))\n",
}
SAMPLES = [
    (4001, CORRECT[4001]),
    (4001, "n = int(input())\nxs = list(map(int, input().split()))\nprint(sum(xs) if n != 1 else 0)\n"),  # 2 of 3
    (4001, "n = int(input())\nwhile n > 0:\n    pass\n"),  # slow: every case times out
    (4002, CORRECT[4002]),
    (4002, "class Solution:\n    def countPairs(self, nums, target):\n        return len(nums) // 2\n"),  # 3 of 4
    (4002, "class Solution:\n    def countPairs(self, nums, target):\n        while nums: pass\n        return 0\n"),  # slow: 1 of 4
    (4003, CORRECT[4003] + "\nQUESTION:\nignored after the stop string"),
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    work = tmp_path_factory.mktemp("apps")
    problems = apps.read_problems(write_jsonl(work / "apps.jsonl", [STDIN_ROW, CALL_ROW, FLOAT_ROW]))
    by_id = {p.problem_id: p for p in problems}
    samples = [(by_id[str(pid)], code) for pid, code in SAMPLES]
    cases, table = apps.evaluate(samples, Sandbox(SandboxConfig(workers=2)), [1, 2], case_timeout_s=1.5)
    return {"cases": cases, "table": table, "problems": problems}


def test_each_case_outcome(evaluated):
    assert evaluated["cases"] == [[True, True, True], [True, False, True], [False, False, False],
                                  [True, True, True, True], [True, False, True, True],
                                  [False, False, True, False], [True, True]]


def test_strict_accuracy_and_test_case_average_per_difficulty(evaluated):
    table = evaluated["table"]
    assert table["introductory"]["strict_accuracy"] == pytest.approx(1 / 3)
    assert table["introductory"]["test_case_average"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert table["interview"]["strict_accuracy"] == pytest.approx(1 / 3)
    assert table["interview"]["test_case_average"] == pytest.approx((1 + 3 / 4 + 1 / 4) / 3)
    assert table["competition"]["strict_accuracy"] == 1.0 and table["competition"]["test_case_average"] == 1.0
    assert table["all"]["strict_accuracy"] == pytest.approx(3 / 7)
    assert table["interview"]["pass@k"] == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3)}
    assert table["competition"]["pass@k"] == {1: 1.0}  # one sample: pass@2 undefined, left out
    assert "| introductory | 1 | 3 | 33.33 | 55.56 | 33.33 | 66.67 |" in apps.summary_table(table, [1, 2])


def test_prompt_is_apps_layout(evaluated):
    stdin, call, _ = evaluated["problems"]
    assert stdin.prompt() == "\nQUESTION:\n" + STDIN_ROW["question"] + "\nUse Standard Input format\nANSWER:\n"
    assert call.prompt() == ("\nQUESTION:\n" + CALL_ROW["question"] + "\n" + CALL_ROW["starter_code"]
                             + "\nUse Call-Based format\nANSWER:\n")
    prefix = apps.shots_prefix([stdin])
    assert prefix.endswith("ANSWER:\nn = int(input())\nprint(sum(map(int, input().split())))\n")
    assert apps.generation_problems([call], prefix)[0].prompt == prefix + call.prompt()


def test_output_comparison_rules():
    assert apps.outputs_match("6", "6\n") and apps.outputs_match(" a \n\n b\n", "a\nb")
    assert apps.outputs_match("0.333333333", "0.3333333333") and not apps.outputs_match("0.34", "0.3333")
    assert not apps.outputs_match("1 2", "2 1")  # order matters (APPS's set comparison is not applied)


def test_bad_rows_name_line_and_field(tmp_path):
    bad = [({**STDIN_ROW, "difficulty": "easy"}, "apps.jsonl:2: field 'difficulty'"),
           ({**STDIN_ROW, "input_output": "{"}, "apps.jsonl:2: field 'input_output' is not valid JSON"),
           ({**STDIN_ROW, "input_output": json.dumps({"inputs": ["1"], "outputs": []})}, "equally long"),
           ({**CALL_ROW, "problem_id": 4001}, "problem_id 4001 already on line 1")]
    for row, message in bad:
        with pytest.raises(ValueError, match=message):
            apps.read_problems(write_jsonl(tmp_path / "apps.jsonl", [STDIN_ROW, row]))
    problems = apps.read_problems(write_jsonl(tmp_path / "ok.jsonl", [STDIN_ROW]))
    with pytest.raises(ValueError, match="s.jsonl:1: field 'problem_id': 7"):
        apps.read_samples(write_jsonl(tmp_path / "s.jsonl", [{"problem_id": 7, "completion": ""}]), problems)


def test_cli_scores_a_samples_file(tmp_path):
    problems_file = write_jsonl(tmp_path / "apps.jsonl", [STDIN_ROW, CALL_ROW])
    samples_file = write_jsonl(tmp_path / "samples.jsonl", [{"problem_id": 4001, "completion": CORRECT[4001]},
                                                             {"problem_id": "4002", "completion": SAMPLES[4][1]}])
    proc = subprocess.run([sys.executable, str(REPO / "tools/evaluate.py"), "apps", "--problems", str(problems_file),
                           "--samples", str(samples_file)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["all"] == {"strict_accuracy": 0.5, "test_case_average": 0.875, "pass@1": 0.5}
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines()]
    assert [r["cases"] for r in rows] == [[True, True, True], [True, False, True, True]]


def test_generation_with_a_model_and_shots(tiny_model_dir, tmp_path):
    """A real (tiny, random) Hugging Face model answers 2-shot prompts; the samples file it
    writes scores again without the model to the same figures."""
    from megacode.eval.generate import GenerationSettings
    from megacode.eval.polyglot_runner import run_apps

    problems_file = write_jsonl(tmp_path / "apps.jsonl", [STDIN_ROW, CALL_ROW])
    shots_file = write_jsonl(tmp_path / "train.jsonl", [STDIN_ROW, {**STDIN_ROW, "problem_id": 1}])
    out = tmp_path / "out"
    report = run_apps(str(problems_file), model=str(tiny_model_dir), shots_path=str(shots_file),
                      settings=GenerationSettings(max_new_tokens=16), out_dir=str(out), case_timeout_s=1.5)
    written = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["problem_id"] for r in written] == ["4001", "4002"]
    assert all(not any(s in r["completion"] for s in apps.STOP) for r in written)
    assert set(report["metrics"]) == {"introductory", "interview", "all"}
    again = run_apps(str(problems_file), samples_path=str(out / "samples.jsonl"), case_timeout_s=1.5)
    assert again["metrics"] == report["metrics"]

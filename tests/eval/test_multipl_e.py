"""MultiPL-E in every language Code Llama reports: real compilers and runtimes in the sandbox.

One problem per language in MultiPL-E's row format (tests/eval/multipl_e_cases.py), six
completions each, all scored once through the public path (problem and samples files read
back, `run_samples`, `score`); each test checks exact outcomes or the host state afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from megacode.eval import multipl_e
from megacode.eval.languages import LANGUAGES, missing_tools, require_toolchains
from megacode.eval.sandbox import Sandbox
from megacode.eval.sandbox_config import SandboxConfig
from tests.eval.multipl_e_cases import EXPECTED, completions, problems
from tests.eval.test_sandbox_adversarial import Listener, sandbox_uid_processes

REPO = Path(__file__).resolve().parents[2]
CODES = ("cpp", "java", "php", "ts", "cs", "sh", "js", "py")
COMPILE_S = 90.0  # generous: this machine is shared, and tsc alone takes seconds
RUN_S = 4.0


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    work = tmp_path_factory.mktemp("multipl_e")
    canary_dir = Path(__file__).resolve().parent / f".multipl-e-canary-{os.getpid()}"
    canary_dir.mkdir()
    canary_dir.chmod(0o777)  # world-writable: only the sandbox's read-only tree keeps programs out
    listener = Listener()
    config = SandboxConfig(workers=2)
    try:
        problems_file = write_jsonl(work / "problems.jsonl", problems())
        rows = [{"name": "HumanEval_0_add", "language": code, "completion": text, "case": case}
                for code in CODES
                for case, text in completions(code, str(canary_dir / f"{code}.txt"), listener.port).items()]
        samples_file = write_jsonl(work / "samples.jsonl", rows)
        loaded = multipl_e.read_problems(problems_file)
        samples = multipl_e.read_samples(samples_file, loaded)
        outcomes = multipl_e.run_samples(samples, Sandbox(config), COMPILE_S, RUN_S)
        leftovers = sandbox_uid_processes(config)
        yield {"rows": rows, "samples": samples, "outcomes": outcomes, "files": (problems_file, samples_file),
               "canaries": sorted(p.name for p in canary_dir.iterdir()), "accepted": listener.accepted,
               "leftovers": leftovers}
    finally:
        listener.close()
        shutil.rmtree(canary_dir, ignore_errors=True)


def test_toolchains_are_installed():
    assert missing_tools(list(LANGUAGES)) == {}, "run tools/install_eval_toolchains.sh"


@pytest.mark.parametrize("case", list(EXPECTED))
def test_exact_outcomes_per_language(scored, case):
    got = {row["language"]: outcome for row, (outcome, _) in zip(scored["rows"], scored["outcomes"])
           if row["case"] == case}
    details = {row["language"]: (r.reason, r.steps, r.stderr_tail[-300:])
               for row, (_, r) in zip(scored["rows"], scored["outcomes"]) if row["case"] == case}
    assert got == EXPECTED[case], details


def test_compile_errors_end_in_the_compile_step(scored):
    for row, (outcome, result) in zip(scored["rows"], scored["outcomes"]):
        if row["case"] == "compile_error" and LANGUAGES[row["language"]].compile:
            assert [s["name"] for s in result.steps] == ["compile"] and result.steps[0]["exit"] != 0, row["language"]


def test_escapes_do_not_reach_the_host(scored):
    assert scored["canaries"] == []  # no language wrote into the host directory
    assert scored["accepted"] == 0  # nor reached the host's loopback
    assert scored["leftovers"] == []  # fork bombs died with their runs


def test_pass_at_k_per_language_and_table(scored):
    scores = multipl_e.score(scored["samples"], scored["outcomes"], [1, 2])
    assert sorted(scores) == sorted(CODES)
    for code in CODES:
        entry = scores[code]
        assert entry.counts == {"HumanEval_0_add": (6, 2)}  # correct and escape (which answers correctly) pass
        assert entry.pass_at[1] == pytest.approx(2 / 6)
        assert entry.pass_at[2] == pytest.approx(1 - (4 / 6) * (3 / 5))
    table = multipl_e.summary_table(scores, [1, 2])
    assert "| C++ | 1 | 6 | 2 | 1 | 1 | 2 | 0 | 0 | 33.33 | 60.00 |" in table
    assert "| TypeScript | 1 | 6 | 2 | 1 | 0 | 2 | 1 | 0 | 33.33 | 60.00 |" in table


def test_stop_tokens_cut_the_completion():
    problem = multipl_e.MultiPLEProblem("p", "cpp", "int f() {\n", "}\nint main() {}\n", ["\n}"])
    assert problem.program("    return 1;\n}\nint junk;\n") == "int f() {\n    return 1;\n}\nint main() {}\n"


def test_bad_problem_and_sample_rows_name_line_and_field(tmp_path):
    good = problems()[0]
    cases = [({**good, "tests": 3}, "problems.jsonl:2: field 'tests' must be str"),
             ({k: v for k, v in good.items() if k != "stop_tokens"}, "problems.jsonl:2: field 'stop_tokens'"),
             ({**good, "language": "cobol"}, "problems.jsonl:2: field 'language': language 'cobol'"),
             (good, "problems.jsonl:2: problem 'HumanEval_0_add' (cpp) already on line 1")]
    for row, message in cases:
        path = write_jsonl(tmp_path / "problems.jsonl", [good, row])
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            multipl_e.read_problems(path)
    loaded = multipl_e.read_problems(write_jsonl(tmp_path / "p.jsonl", problems()))
    for row, message in [({"name": "HumanEval_0_add", "language": "cpp"}, "s.jsonl:1: field 'completion'"),
                         ({"name": "HumanEval_9", "language": "cpp", "completion": ""}, "s.jsonl:1: field 'name'"),
                         ({"name": "HumanEval_0_add", "completion": ""}, "exists in cpp, java")]:
        with pytest.raises(ValueError, match=message):
            multipl_e.read_samples(write_jsonl(tmp_path / "s.jsonl", [row]), loaded)


def test_missing_toolchain_is_reported_before_anything_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing installed
    with pytest.raises(RuntimeError, match=r"toolchains missing \(C\+\+: g\+\+; Java: javac, java.*install_eval"):
        require_toolchains(["cpp", "java"])


def test_cli_scores_a_samples_file(tmp_path):
    """tools/evaluate.py multipl-e --problems --samples: table per language, results beside the samples."""
    problems_file = write_jsonl(tmp_path / "problems.jsonl", [p for p in problems() if p["language"] in ("sh", "js")])
    rows = [{"name": "HumanEval_0_add", "language": code, "completion": completions(code, "/nonexistent/x", 9)[case]}
            for code in ("sh", "js") for case in ("correct", "wrong")]
    samples_file = write_jsonl(tmp_path / "samples.jsonl", rows)
    proc = subprocess.run([sys.executable, str(REPO / "tools/evaluate.py"), "multipl-e", "--problems",
                           str(problems_file), "--samples", str(samples_file), "--k", "1"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| Bash | 1 | 2 | 1 | 0 | 1 | 0 | 0 | 0 | 50.00 |" in proc.stdout
    assert "| JavaScript | 1 | 2 | 1 | 0 | 0 | 0 | 1 | 0 | 50.00 |" in proc.stdout
    results = [json.loads(line) for line in (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in results] == ["OK", "Exception", "OK", "AssertionError"]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"sh": {"pass@1": 0.5}, "js": {"pass@1": 0.5}}


def test_a_compiler_out_of_memory_or_time_fails_the_sample():
    """cc1plus reading /dev/zero exhausts the address-space limit; a constexpr loop of 4e10 steps
    runs the compiler into its time limit. Both are MultiPL-E compile errors, and both runs end."""
    cpp = LANGUAGES["cpp"]
    sandbox = Sandbox(SandboxConfig(workers=2))
    jobs = [cpp.job('#include "/dev/zero"\nint main() {}\n', compile_timeout_s=COMPILE_S),
            cpp.job("constexpr long f() { long s = 0; for (long i = 0; i < 200000; i++) for (long j = 0; j < 200000; j++)"
                    " s += i ^ j; return s; }\n"
                    "static_assert(f() != 1);\nint main() {}\n", compile_timeout_s=3.0)]
    memory, slow = sandbox.run_many(jobs, progress=False)
    assert cpp.outcome(memory) == "SyntaxError" and "out of memory" in memory.stderr_tail
    assert memory.steps == [{"name": "compile", "exit": 1, "timed_out": False, "seconds": memory.steps[0]["seconds"]}]
    assert cpp.outcome(slow) == "SyntaxError" and slow.status == "timed_out"
    assert [(s["name"], s["exit"], s["timed_out"]) for s in slow.steps] == [("compile", None, True)]


def test_generation_with_a_model_then_scoring(tiny_model_dir, tmp_path):
    """A real (tiny, random) Hugging Face model generates per problem; completions are cut at
    the stop tokens, written re-scorable, and every sample gets a MultiPL-E outcome."""
    from megacode.eval.generate import GenerationSettings
    from megacode.eval.polyglot_runner import run_multipl_e

    problems_file = write_jsonl(tmp_path / "problems.jsonl", problems())
    out = tmp_path / "out"
    report = run_multipl_e(str(problems_file), model=str(tiny_model_dir), languages=["sh", "js", "py"],
                           settings=GenerationSettings(max_new_tokens=24), out_dir=str(out), run_timeout_s=RUN_S)
    written = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["language"] for r in written) == ["js", "py", "sh"]
    stops = {p["language"]: p["stop_tokens"] for p in problems()}
    assert all(not any(s in r["completion"] for s in stops[r["language"]]) for r in written)
    results = [json.loads(line) for line in Path(report["results"]).read_text().splitlines()]
    assert len(results) == 3 and all(r["outcome"] in ("OK", "SyntaxError", "Exception", "Timeout", "AssertionError",
                                                      "ReferenceError") for r in results)
    assert set(report["pass@k"]) == {"sh", "js", "py"} and (out / "multipl-e_summary.md").is_file()
    # The same file scores again without the model.
    again = run_multipl_e(str(problems_file), samples_path=str(out / "samples.jsonl"), run_timeout_s=RUN_S)
    assert again["pass@k"] == report["pass@k"]


def test_missing_toolchain_stops_before_generation(monkeypatch, tmp_path):
    from megacode.eval.polyglot_runner import run_multipl_e

    class MustNotGenerate:
        def generate(self, *args, **kwargs):
            raise AssertionError("generation started before the toolchain check")

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="toolchains missing"):
        run_multipl_e(str(write_jsonl(tmp_path / "p.jsonl", problems())), generator=MustNotGenerate(),
                      out_dir=str(tmp_path / "out"))


def test_command_mode_without_namespaces_still_runs_and_contains(tmp_path):
    """The fallback (no namespaces: uid and rlimits only) runs compiled languages too, and a
    looping program is still stopped."""
    config = SandboxConfig(namespaces="off", workers=2)
    sandbox = Sandbox(config)
    rows = {p["language"]: p for p in problems()}
    bash = multipl_e.MultiPLEProblem(**{k: rows["sh"][k] for k in ("name", "language", "prompt", "tests", "stop_tokens")})
    cases = completions("sh", str(tmp_path / "x"), 9)
    samples = [multipl_e.MultiPLESample(bash, cases[name]) for name in ("correct", "wrong", "loop")]
    outcomes = multipl_e.run_samples(samples, sandbox, COMPILE_S, RUN_S)
    assert [o for o, _ in outcomes] == ["OK", "Exception", "Timeout"]
    assert not sandbox.isolation.namespaces and sandbox_uid_processes(config) == []

"""Infilling evaluation: canonical middles pass and empty ones fail through the scorer, and the
`infill` CLI mode runs end to end (a tiny random model with a Code Llama tokenizer) writing
per-problem results for both layouts and a summary."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from megacode.eval.infilling import load_infilling_problems, score_middles
from megacode.eval.sandbox import Sandbox
from megacode.eval.sandbox_config import SandboxConfig

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "data"))  # spm_fixtures

PROBLEMS = [
    {"task_id": "SingleLineInfilling/add/L0", "entry_point": "add",
     "prompt": "def add(a, b):\n    \"\"\"Sum of a and b.\"\"\"\n", "canonical_solution": "    total = a + b\n",
     "suffix": "    return total\n",
     "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"},
    {"task_id": "MultiLineInfilling/evens/L0_L1", "entry_point": "evens",
     "prompt": "def evens(xs):\n    out = []\n", "suffix": "    return out\n",
     "canonical_solution": "    for x in xs:\n        if x % 2 == 0:\n            out.append(x)\n",
     "test": "def check(candidate):\n    assert candidate([1, 2, 3, 4]) == [2, 4]\n    assert candidate([]) == []\n"},
    {"task_id": "SingleLineInfilling/shout/L1", "entry_point": "shout",
     "prompt": "def shout(s):\n    s = s.strip()\n", "canonical_solution": "    s = s.upper()\n",
     "suffix": "    return s + '!'\n",
     "test": "def check(candidate):\n    assert candidate(' hi ') == 'HI!'\n"},
]


@pytest.fixture()
def problems_file(tmp_path) -> Path:
    path = tmp_path / "infill.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in PROBLEMS))
    return path


def test_canonical_middles_pass_and_empty_middles_fail(problems_file):
    problems = load_infilling_problems(problems_file)
    sandbox = Sandbox(SandboxConfig(timeout_s=20, workers=2))
    good = score_middles(problems, {row["task_id"]: row["canonical_solution"] for row in PROBLEMS}, sandbox)
    assert [r.passed for r in good.results] == [True] * len(PROBLEMS), [r.reason for r in good.results]
    assert good.pass_at == {1: 1.0}
    empty = score_middles(problems, {row["task_id"]: "" for row in PROBLEMS}, sandbox)
    assert not any(r.passed for r in empty.results) and empty.pass_at == {1: 0.0}


def test_bad_problems_file_is_reported(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"task_id": "x", "prompt": "def f():\n"}) + "\n")
    with pytest.raises(ValueError, match="suffix"):
        load_infilling_problems(path)


@pytest.fixture(scope="module")
def tiny_infill_model(tmp_path_factory) -> Path:
    import torch
    from spm_fixtures import stdlib_texts, train_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from megacode.tokenizer import build_codellama_tokenizer, load

    lines = [ln for text in stdlib_texts(200_000) for ln in text.splitlines() if ln.strip()]
    rng = random.Random(2)  # "☺" alone, as in Llama 2 (enc' relies on it)
    lines += ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz(){}[]:;.,") + "☺" for _ in range(40)) for _ in range(60)]
    base = train_model(lines, 496)
    directory = tmp_path_factory.mktemp("infill-model")
    tok_path = build_codellama_tokenizer(base, directory / "tokenizer.model", allow_non_llama_base=True)
    tok = load(tok_path)
    config = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def test_infill_cli_end_to_end(tiny_infill_model, problems_file, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "evaluate.py"), "infill", "--model",
                           str(tiny_infill_model), "--samples", str(problems_file), "--out", str(out),
                           "--max-new-tokens", "8", "--workers", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for layout in ("psm", "spm"):
        rows = [json.loads(line) for line in (out / layout / "results.jsonl").read_text().splitlines()]
        assert [r["task_id"] for r in rows] == [p["task_id"] for p in PROBLEMS]
        assert all(isinstance(r["passed"], bool) and isinstance(r["completion"], str) for r in rows)
        assert (out / layout / "per_problem.jsonl").is_file() and (out / layout / "summary.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["pass@1"]) == {"psm", "spm"} and summary["problems"] == len(PROBLEMS)
    assert all(0.0 <= v <= 1.0 for v in summary["pass@1"].values())
    assert "pass@1 psm" in done.stdout


def test_infill_cli_names_what_is_missing(tmp_path, problems_file):
    evaluate = [sys.executable, str(REPO / "tools" / "evaluate.py"), "infill"]
    done = subprocess.run(evaluate + ["--model", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--samples PROBLEMS.jsonl" in done.stderr
    done = subprocess.run(evaluate + ["--model", str(tmp_path / "nope"), "--samples", str(problems_file)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "not a Hugging Face model directory" in done.stderr

"""Fixtures of the recipe tests: a tiny tokenizer, a tokenized code/NL corpus, generated dialogs."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from spm_fixtures import stdlib_texts, train_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WORDS = "the a value of function returns list when is and to in for each item data file name".split()
NAMES = ["alpha", "beta", "gamma", "delta", "total", "count", "items", "value"]


def make_dialogs(n: int, seed: int = 0) -> list[list[dict]]:
    """`n` small coding dialogs with a regular answer pattern (learnable in a few steps), some with a
    system prompt, some with two turns."""
    rng = random.Random(seed)
    dialogs = []
    for i in range(n):
        a, b = rng.sample(NAMES, 2)
        op, sym = rng.choice([("sum", "+"), ("difference", "-"), ("product", "*")])
        messages = []
        if i % 3 == 0:
            messages.append({"role": "system", "content": "You write short Python functions."})
        messages += [{"role": "user", "content": f"Write a function returning the {op} of {a} and {b}."},
                     {"role": "assistant", "content": f"def {op}({a}, {b}):\n    return {a} {sym} {b}"}]
        if i % 4 == 1:
            messages += [{"role": "user", "content": f"Now call it with {a}=1."},
                         {"role": "assistant", "content": f"{op}(1, {b})"}]
        dialogs.append(messages)
    return dialogs


@pytest.fixture(scope="session")
def recipe_corpus(tmp_path_factory):
    """Tokenizer (512 pieces, fits the tiny flavor), `code` and `nl` text datasets, `dialogs` (JSONL
    of 48 dialogs) and its instruct dataset prefix `instruct`."""
    tmp = tmp_path_factory.mktemp("recipe-corpus")
    code = [t for t in stdlib_texts(250_000) if t.strip()]
    lines = [ln for t in code for ln in t.splitlines() if ln.strip()]
    lines += [m["content"] for d in make_dialogs(200, seed=9) for m in d]
    model = train_model(lines, 512)
    rng = random.Random(0)
    texts = {"code": code[:50],
             "nl": [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 80))) + "." for _ in range(150)]}
    out = {"model": str(model), "cache": str(tmp / "index-cache")}
    for name, docs in texts.items():
        jsonl = tmp / f"{name}.jsonl"
        jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        proc = subprocess.run([sys.executable, str(REPO / "tools" / "preprocess_data.py"), "--input", str(jsonl),
                               "--output-prefix", str(tmp / name), "--tokenizer-model", str(model), "--append-eod"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        out[name] = str(tmp / f"{name}_text_document")
    dialogs = tmp / "dialogs.jsonl"
    dialogs.write_text("".join(json.dumps({"messages": d, "source": "test"}) + "\n" for d in make_dialogs(48)))
    out["dialogs"] = str(dialogs)
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "prepare_instruct.py"), "--input", str(dialogs),
                           "--tokenizer-model", str(model), "--output-prefix", str(tmp / "instruct" / "dialogs")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out["instruct"] = str(tmp / "instruct" / "dialogs")
    out["prepare_stdout"] = proc.stdout
    return out

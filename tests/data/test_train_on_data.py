"""End to end on real files: a corpus tokenized by tools/preprocess_data.py (a 512-piece
SentencePiece model fits the tiny flavor), trained from a 2-dataset blend on 4 gloo ranks at
TP2 x PP2 with validation; a run without validation data skips it; inspect_data decodes a sample."""

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from spm_fixtures import stdlib_texts, train_model  # noqa: E402

from tests.training.launch import REPO, train  # noqa: E402

WORDS = "the a value of function returns list when is and to in for each item data file name".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """{code, nl}: dataset prefixes; model: the tokenizer; texts: every document by dataset."""
    tmp = tmp_path_factory.mktemp("corpus")
    code = [t for t in stdlib_texts(300_000) if t.strip()]  # preprocessing drops empty documents
    model = train_model([ln for t in code for ln in t.splitlines() if ln.strip()], 512)
    rng = random.Random(0)
    texts = {"code": code[:60],
             "nl": [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 80))) + "." for _ in range(200)]}
    out = {"model": model, "texts": texts}
    for name, docs in texts.items():
        jsonl = tmp / f"{name}.jsonl"
        jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        proc = subprocess.run([sys.executable, str(REPO / "tools" / "preprocess_data.py"), "--input", str(jsonl),
                               "--output-prefix", str(tmp / name), "--tokenizer-model", str(model), "--append-eod"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        out[name] = str(tmp / f"{name}_text_document")
    out["cache"] = str(tmp / "index-cache")
    return out


def data_overrides(corpus, *extra):
    return [f"data.paths=[{{path: {corpus['code']}, weight: 0.7}}, {{path: {corpus['nl']}, weight: 0.3}}]",
            f"data.tokenizer_model={corpus['model']}", f"data.cache_dir={corpus['cache']}",
            "data.seq_length=64", "train.global_batch_tokens=512", "train.micro_batch_size=2",
            "schedule.warmup_iters=2", "optim.lr=1e-2", "logging.interval=1", "checkpoint.dir=null",
            "logging.dir=null", *extra]


def valid_losses(stdout: str) -> dict:
    return {int(s): float(v) for s, v in re.findall(r"valid step (\d+) \| loss ([0-9.]+)", stdout)}


def test_blend_trains_at_tp2pp2_with_validation(corpus, tmp_path):
    steps, proc = train(4, data_overrides(corpus, "parallel.tp=2", "parallel.pp=2", "train.iters=20",
                                          "data.split=90,10", "train.eval_interval=10", "train.eval_iters=1"),
                        tmp_path, "blend")
    losses = [s["loss"] for s in steps]
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:3]) / 3, losses
    assert "BlendedDataset(2 datasets, weights=[0.7, 0.3]" in proc.stdout
    valid = valid_losses(proc.stdout)
    assert sorted(valid) == [10, 20] and valid[20] < 6.0, proc.stdout[-3000:]  # ln 512 = 6.24 at the start


def test_no_validation_data_is_said_once_and_skipped(corpus, tmp_path):
    steps, proc = train(1, data_overrides(corpus, "parallel.tp=1", "parallel.pp=1", "train.iters=4",
                                          "data.split=100,0", "train.eval_interval=2", "data.loader=python",
                                          "data.num_workers=0"), tmp_path, "novalid")
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    assert (proc.stdout + proc.stderr).count("validation skipped") == 1
    assert valid_losses(proc.stdout) == {}


def test_inspect_data_decodes_a_sample(corpus):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "inspect_data.py"), "--config",
                           str(REPO / "configs" / "tiny" / "pretrain.yaml"), *data_overrides(corpus, "train.iters=20"),
                           "--samples", "0,1,2,3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    samples = proc.stdout.split("=== sample ")[1:]
    assert len(samples) == 4
    for block in samples:
        pieces = re.findall(r"component (\d) +(\S+) +document (\d+) +tokens \[(\d+), (\d+)\)", block)
        assert pieces and sum(int(e) - int(s) for *_, s, e in pieces) == 65  # seq_length + 1 tokens
        text = block.split("\ntext:\n", 1)[1]
        chunks = re.split(r"⟦doc \d+ @\d+⟧", text)[1:]  # one per piece
        assert len(chunks) == len(pieces)
        if len(pieces) > 1:  # the first piece runs to its document's end: the EOS --append-eod wrote
            assert "⟦EOS⟧" in chunks[0]
        checked = 0
        for (component, prefix, doc, start, _), chunk in zip(pieces, chunks):
            name = "code" if prefix == corpus["code"] else "nl"
            assert component == ("0" if name == "code" else "1")
            decoded = chunk.replace("⟦EOS⟧", "").strip()
            if len(decoded) > 12:  # a piece of the very document it names (edge characters may be cut)
                assert decoded[1:-1] in corpus["texts"][name][int(doc)], (name, doc, decoded)
                checked += 1
        assert checked

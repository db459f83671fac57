"""tools/inspect_data.py: pieces, ids and decoded text with document/EOS markers, step layout,
the part-marker hook (for FIM), the synthetic stream, and errors that name the problem."""

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from spm_fixtures import tiny_model  # noqa: E402

from megacode.data import sample_view  # noqa: E402
from megacode.data.indexed import IndexedDatasetWriter  # noqa: E402
from megacode.tokenizer import load  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "tiny" / "pretrain.yaml")
TEXTS = ["def add(a, b):\n    return a + b", "x = [i * i for i in range(10)]", "print('hello')",
         "class Point:\n    pass", "import os", "while True:\n    break", "y = {'k': 1}", "z = None"]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("inspect_data", REPO / "tools" / "inspect_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inspect")
    model = tiny_model()
    tok = load(model)
    with IndexedDatasetWriter(str(tmp / "code"), np.uint16) as w:
        for text in TEXTS * 4:
            w.add_document(tok.encode(text) + [tok.eos_id])
    return {"prefix": str(tmp / "code"), "model": str(model), "tok": tok, "cache": str(tmp / "cache")}


def overrides(data, *extra):
    return [f"data.paths=[{{path: {data['prefix']}}}]", f"data.cache_dir={data['cache']}", "data.vocab_size=2000",
            "data.seq_length=32", "train.global_batch_tokens=256", "train.micro_batch_size=2", "train.iters=3",
            "parallel.tp=1", "parallel.pp=1", *extra]


def run(tool, capsys, args):
    code = tool.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_samples_show_pieces_ids_and_whole_documents(tool, data, capsys):
    code, out, _ = run(tool, capsys, ["--config", CONFIG, *overrides(data), "--samples", "0,5",
                                      "--tokenizer-model", data["model"]])
    assert code == 0
    blocks = out.split("=== sample ")[1:]
    assert [b.split(" ", 1)[0] for b in blocks] == ["0", "5"]
    whole = 0
    for block in blocks:
        ids = [int(t) for t in re.search(r"ids \(33\): ([\d ]+)", block).group(1).split()]
        pieces = [tuple(map(int, p)) for p in
                  re.findall(r"sample tokens \[(\d+), (\d+)\) +component 0 +\S+ +document (\d+) +tokens \[(\d+), (\d+)\)",
                             block)]
        assert len(ids) == 33 and pieces[0][0] == 0 and pieces[-1][1] == 33
        for lo, hi, doc, start, end in pieces:
            want = data["tok"].encode(TEXTS[doc % len(TEXTS)]) + [data["tok"].eos_id]
            assert ids[lo:hi] == want[start:end]  # the ids really are those tokens of that document
            if start == 0 and end == len(want):  # a whole document reads back as its text, then EOS
                assert f"⟦doc {doc} @0⟧{TEXTS[doc % len(TEXTS)]}⟦EOS⟧" in block
                whole += 1
    assert whole >= 2


def test_step_layout_and_part_marker_hook(tool, data, capsys):
    def fim_like(ids, tokenizer):
        return [(4, "⟦MID⟧")]

    sample_view.register_part_marker(fim_like)
    try:
        code, out, _ = run(tool, capsys, ["--config", CONFIG, *overrides(data), "--step", "1", "--world-size", "2",
                                          "--limit", "8", "--tokenizer-model", data["model"]])
    finally:
        sample_view.PART_MARKERS.remove(fim_like)
    assert code == 0
    headers = re.findall(r"=== sample (\d+) of train \(step 1, micro-batch (\d), dp rank (\d)\)", out)
    # global batch 8 at DP 2, mbs 2: sample 8 + m·4 + r·2 + j
    assert headers == [(str(8 + k), str(k // 4), str(k % 4 // 2)) for k in range(8)]
    assert out.count("⟦MID⟧") == 8


def test_synthetic_stream_and_valid_split(tool, data, capsys):
    code, out, _ = run(tool, capsys, ["--config", CONFIG, "data.seq_length=16", "train.global_batch_tokens=64",
                                      "train.micro_batch_size=1", "--samples", "2"])
    assert code == 0 and "(none: synthetic stream, no documents)" in out and "ids (17):" in out
    assert "no tokenizer" in out
    code, out, _ = run(tool, capsys, ["--config", CONFIG, *overrides(data, "data.split=50,50"), "--split", "valid",
                                      "--samples", "0", "--tokenizer-model", data["model"]])
    assert code == 0 and "=== sample 0 of valid ===" in out
    documents = [int(d) for d in re.findall(r"document (\d+)", out)]
    assert documents and min(documents) >= 16  # the valid half of 32 documents


def test_errors_name_the_problem(tool, data, capsys):
    code, _, err = run(tool, capsys, ["--config", CONFIG, *overrides(data), "--step", "3"])
    assert code == 2 and "--step 3 outside [0, 3)" in err
    code, _, err = run(tool, capsys, ["--config", CONFIG, *overrides(data), "--samples", "24"])
    assert code == 2 and "sample 24 outside [0, 24) of the train set" in err
    code, _, err = run(tool, capsys, ["--config", CONFIG, *overrides(data, "data.split=100,0"), "--split", "valid"])
    assert code == 2 and "no validation data" in err
    code, _, err = run(tool, capsys, ["--config", CONFIG, *overrides(data), "data.vocab_size=100",
                                      "data.tokenizer_model=" + data["model"]])
    assert code == 2 and "has 2000 pieces but the model vocabulary is 100" in err
    code, _, err = run(tool, capsys, ["--config", CONFIG, "data.paths=[{path: /nonexistent/x}]"])
    assert code == 2 and "/nonexistent/x.idx: no such file" in err

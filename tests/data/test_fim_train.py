"""FIM end to end on real files: a corpus tokenized by tools/preprocess_data.py with a Code Llama
tokenizer (tiny model + the 16 infilling pieces), a training run with data.fim.enabled=true,
and tools/inspect_data.py showing a transformed document with its parts marked."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from spm_fixtures import stdlib_texts, tiny_model  # noqa: E402

from megacode.tokenizer.codellama import extend_with_infill_pieces  # noqa: E402
from tests.training.launch import REPO, TINY_CONFIG, train  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Short code documents (stdlib paragraphs), so that many fit whole in a 64-token context."""
    tmp = tmp_path_factory.mktemp("fimtrain")
    model = tmp / "codellama-tiny.model"
    model.write_bytes(extend_with_infill_pieces(tiny_model().read_bytes(), allow_non_llama_base=True))
    docs = [p for t in stdlib_texts(400_000) for p in t.split("\n\n") if 20 <= len(p.strip()) <= 160][:800]
    jsonl = tmp / "code.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "preprocess_data.py"), "--input", str(jsonl),
                           "--output-prefix", str(tmp / "code"), "--tokenizer-model", str(model), "--append-eod"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {"prefix": str(tmp / "code_text_document"), "model": str(model), "docs": docs,
            "cache": str(tmp / "index-cache")}


def overrides(corpus, *extra):
    return [f"data.paths=[{{path: {corpus['prefix']}}}]", f"data.tokenizer_model={corpus['model']}",
            "data.vocab_size=2016", f"data.cache_dir={corpus['cache']}", "data.fim.enabled=true",
            "data.seq_length=64", "data.split=100,0", "train.global_batch_tokens=512", "train.micro_batch_size=2",
            "parallel.tp=1", "parallel.pp=1", "train.eval_interval=0", "schedule.warmup_iters=2", "optim.lr=1e-2",
            "logging.interval=1", "checkpoint.dir=null", "logging.dir=null", *extra]


def test_training_on_fim_samples(corpus, tmp_path):
    steps, proc = train(1, overrides(corpus, "train.iters=8", "data.num_workers=2"), tmp_path, "fim")
    losses = [s["loss"] for s in steps]
    assert len(losses) == 8 and all(l == l for l in losses)  # noqa: E741 (no NaN)
    assert sum(losses[-3:]) / 3 < sum(losses[:2]) / 2, losses
    line = re.search(r"data: FIM on 1 dataset\(s\), rate 0.9, SPM 0.5, .*probe: (\d+)/(\d+) whole documents "
                     r"transformed .*?(\d+) of (\d+) sample tokens dropped", proc.stdout + proc.stderr)
    assert line, (proc.stdout + proc.stderr)[-3000:]
    transformed, eligible = int(line.group(1)), int(line.group(2))
    assert eligible > 20 and 0.6 < transformed / eligible <= 1.0


def test_inspect_data_marks_the_parts(corpus):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "inspect_data.py"), "--config", str(TINY_CONFIG),
                           *overrides(corpus, "train.iters=4"), "--samples", ",".join(map(str, range(8)))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "FIM pieces (sample positions after the transform):" in out
    docs = set(corpus["docs"])
    part = "([^⟦]*)"  # a part's text runs to the next marker
    psm = re.findall(f"⟦FIM PSM: prefix⟧<PRE>{part}⟦suffix⟧<SUF>{part}⟦middle⟧<MID>{part}⟦end of middle⟧<EOT>", out)
    for prefix, suffix, middle in psm:
        assert prefix[1:] + middle + suffix in docs  # enc(prefix) decodes with its implicit space
    spm = re.findall(f"⟦FIM SPM, or PSM with an empty prefix⟧<PRE>⟦suffix⟧<SUF>{part}"
                     f"⟦prefix\\+middle \\(SPM\\) or middle⟧<MID>{part}⟦end of middle⟧<EOT>", out)
    for suffix, both in spm:
        assert both[1:] + suffix in docs or both + suffix in docs  # SPM: enc(prefix + middle); PSM: enc'(middle)
    assert len(psm) >= 2 and len(spm) >= 2, out[-3000:]

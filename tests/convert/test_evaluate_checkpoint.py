"""`tools/evaluate.py --megacode-checkpoint`: a megacode checkpoint is exported to Hugging Face
format and evaluated like any HF model (generation + sandboxed HumanEval tests)."""

import json
import subprocess
import sys

from tests.training.launch import REPO


def test_evaluate_exports_and_scores_a_megacode_checkpoint(imported, tmp_path):
    out = tmp_path / "eval"
    done = subprocess.run([sys.executable, "tools/evaluate.py", "humaneval", "--megacode-checkpoint",
                           str(imported["gqa"]), "--out", str(out), "--limit", "2", "--max-new-tokens", "8",
                           "--workers", "2"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "hf" / "config.json").is_file() and (out / "hf" / "model.safetensors.index.json").is_file()
    summaries = list(out.rglob("summary.json"))
    assert summaries, sorted(p.name for p in out.rglob("*"))
    summary = json.loads(summaries[0].read_text())
    assert summary["problems"] == 2 and summary["samples"] == 2 and "1" in summary["pass@k"]
    assert summary["model"] == str(out / "hf")

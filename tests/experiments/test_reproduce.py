"""tools/reproduce.py end to end at --scale micro: outputs, schema, finite numbers, figures, and
that each model was trained by megacode.train under torchrun with the run config it says.
No timings and no direction checks here: micro numbers are noise."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml


def _numbers(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _numbers(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _numbers(v)
    else:
        yield tree


def _check_outputs(out: Path, experiment: str) -> dict:
    from PIL import Image

    results = json.loads((out / "results.json").read_text())
    assert results["experiment"] == experiment and results["scale"] == "micro"
    assert results["seconds"] > 0
    with Image.open(out / f"{experiment}.png") as image:  # a PNG that opens, of a sensible size
        assert image.format == "PNG" and image.size[0] >= 400 and image.size[1] >= 200
        image.load()
    report = (out / "report.md").read_text()
    assert f"![{experiment}]({experiment}.png)" in report and ("| measure" in report or "| model" in report)
    assert "## Expected directions" in report
    assert all(isinstance(c["holds"], bool) for c in results["checks"])
    return results


def test_fim_micro(micro_runs):
    out = micro_runs["fim"]
    r = _check_outputs(out, "fim")
    assert set(r["l2r_loss"]) == {"fim", "no_fim"}
    assert set(r["infill_loss"]) == {"psm", "spm"}
    for layout in ("psm", "spm"):
        assert set(r["infill_loss"][layout]) == {"fim", "l2r_prefix_only"}
    assert set(r["infill_exact_match"]) == {"single_line", "multi_line"}
    for kind in ("single_line", "multi_line"):
        assert set(r["infill_exact_match"][kind]) == {"psm", "spm", "l2r"}
        assert all(0 <= v <= 1 for v in r["infill_exact_match"][kind].values())
        cut = r["details"]["exact_match_at_line_count"][kind]
        assert set(cut) == {"psm", "spm"} and all(0 <= v <= 1 for v in cut.values())
    losses = list(_numbers(r["l2r_loss"])) + list(_numbers(r["infill_loss"]))
    assert all(math.isfinite(v) and 0 < v < 20 for v in losses)
    assert isinstance(r["tokens"], int) and r["tokens"] > 0
    # the prompts the evaluation infills with are what the C++ transform trained on
    assert r["details"]["training_layout_mismatches"] == 0
    assert "whole documents transformed" in r["details"]["fim_probe"]
    runs = {name: yaml.safe_load((out / "runs" / name / "run.yaml").read_text()) for name in ("fim", "no_fim")}
    assert runs["fim"]["data"]["fim"] == {"enabled": True, "rate": 0.9, "spm_rate": 0.5}
    assert runs["no_fim"]["data"]["fim"] == {"enabled": False}
    assert runs["fim"]["seed"] == runs["no_fim"]["seed"]  # same weights at start, same data order
    for name in ("fim", "no_fim"):
        log = (out / "runs" / name / "train.log").read_text()
        assert "train step 1 |" in log and "exit 0" in log
        assert (out / "runs" / name / "hf" / "config.json").is_file()
        assert f"torchrun --nproc-per-node 2 -m megacode.train --config {out}/runs/{name}/run.yaml" in \
            r["runs"][name]["command"]
    assert "ETA" in micro_runs["logs"]["fim"]


def test_lcft_micro(micro_runs):
    out = micro_runs["lcft"]
    r = _check_outputs(out, "lcft")
    L = r["train_length"]
    assert r["lcft_length"] == 4 * L
    assert r["eval_lengths"][0] == L // 2 and r["eval_lengths"][-1] == 16 * L
    assert set(r["perplexity"]) == {"base", "lcft_theta_1e6", "lcft_theta_1e4"}
    for values in r["perplexity"].values():
        assert len(values) == len(r["eval_lengths"]) and all(math.isfinite(v) and v > 1 for v in values)
    ret = r["retrieval"]
    assert set(ret["accuracy"]) == set(r["perplexity"])
    assert all(len(v) == len(ret["distances"]) and all(0 <= a <= 1 for a in v) for v in ret["accuracy"].values())
    # the continuations start from the base's weights at 4L, one with θ 10^6, one keeping 10^4
    for name, theta in (("lcft_theta_1e6", 1e6), ("lcft_theta_1e4", 1e4)):
        run = yaml.safe_load((out / "runs" / name / "run.yaml").read_text())
        assert run["checkpoint"]["load"] == str(out / "runs" / "base" / "checkpoints")
        assert run["checkpoint"]["finetune"] is True and run["data"]["seq_length"] == 4 * L
        assert run["model"]["rope_base"] == theta
        exported = json.loads((out / "runs" / name / "hf" / "config.json").read_text())
        assert exported["rope_theta"] == theta
        assert "(weights only, new stage)" in (out / "runs" / name / "train.log").read_text()
    # both experiments used one corpus and tokenizer from the shared cache
    assert "tokenizer: training" in micro_runs["logs"]["fim"]
    assert "tokenizer: training" not in micro_runs["logs"]["lcft"]
    assert len(list(micro_runs["cache"].glob("tokenizer-*"))) == 1

"""A Llama of a shape no flavor has (CUSTOM_SHAPE: hidden 128, 8 heads in 2 KV groups, FFN 344,
vocab 512, θ 1e6) through import, training and export.

- The command-line import at TP2 x PP2 stores `model.flavor: custom` with config.json's shapes,
  prints the model section and writes it to model.yaml; the export gives back every tensor bit
  for bit and a config.json with which transformers computes the original's logits exactly.
- megacode.train at TP2 x PP2 from the import, with the model section from model.yaml: its
  first-step loss equals the Hugging Face model's loss on the same batch (fp32, 1e-5).
- A run whose model differs from the checkpoint's fails before launch (`--check-only`), naming both.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from megacode.checkpoint.dist_ckpt import read_common
from megacode.checkpoint.tracker import step_dir
from tests.convert.conftest import CUSTOM_SHAPE
from tests.convert.test_roundtrip import assert_bit_identical, hf_tensors
from tests.training.launch import REPO, TINY_CONFIG, torchrun

SHAPE_KEYS = ("num_layers", "hidden_size", "num_attention_heads", "num_query_groups", "ffn_hidden_size",
              "vocab_size", "norm_epsilon", "rope_base", "max_position_embeddings")


def test_import_stores_and_prints_the_shape(custom_import):
    ckpt = custom_import["checkpoint"]
    model = read_common(step_dir(ckpt, 0))["config"]["model"]
    want = {key: getattr(CUSTOM_SHAPE, key) for key in SHAPE_KEYS}
    assert model["flavor"] == "custom" and model["shape"] == want
    section = yaml.safe_load((ckpt / "model.yaml").read_text())["model"]
    assert section == {"flavor": "custom", "shape": want}
    printed = custom_import["stdout"]
    assert "model:\n  flavor: custom\n  shape: {num_layers: 4, hidden_size: 128" in printed
    assert "model.flavor=custom 'model.shape={num_layers: 4, hidden_size: 128," in printed
    assert f"checkpoint.load={ckpt} checkpoint.finetune=true" in printed


def test_round_trip_is_bit_identical_and_transformers_gives_the_logits(custom_export, hf_models):
    from transformers import AutoModelForCausalLM

    assert_bit_identical(hf_tensors(hf_models["custom"]), hf_tensors(custom_export))
    config = json.loads((custom_export / "config.json").read_text())
    assert (config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"],
            config["intermediate_size"], config["vocab_size"]) == (128, 8, 2, 16, 344, 512)
    assert (config["rope_theta"], config["rms_norm_eps"], config["max_position_embeddings"]) == (1e6, 1e-6, 512)
    ours = AutoModelForCausalLM.from_pretrained(custom_export, dtype=torch.float32).eval()
    reference = AutoModelForCausalLM.from_pretrained(hf_models["custom"], dtype=torch.float32).eval()
    tokens = torch.arange(96).reshape(2, 48) * 11 % 512
    with torch.no_grad():
        assert torch.equal(ours(tokens).logits, reference(tokens).logits)


def _check_only(tmp_path, overrides):
    env = {**os.environ, "WORLD_SIZE": "4"}
    return subprocess.run([sys.executable, "-m", "megacode.train", "--config", str(TINY_CONFIG), "--check-only",
                           "logging.dir=null", f"checkpoint.dir={tmp_path / 'run'}", *overrides],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_run_with_another_model_fails_before_launch(tmp_path, custom_import):
    ckpt = custom_import["checkpoint"]
    done = _check_only(tmp_path, [f"checkpoint.load={ckpt}", "checkpoint.finetune=true"])
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("megacode: config error: the run's model tiny (4 layers, hidden 64")
    assert "custom (4 layers, hidden 128, 8 heads, 2 KV groups, FFN 344, vocab 512)" in lines[0]
    assert "hidden_size 64 vs 128" in lines[0] and "norm_epsilon 1e-05 vs 1e-06" in lines[0]
    with_shape = _check_only(tmp_path, [f"checkpoint.load={ckpt}", "checkpoint.finetune=true", "model.flavor=custom",
                                        "model.shape=" + yaml.safe_dump(CUSTOM_SHAPE.shape_config().__dict__,
                                                                        default_flow_style=True).strip()])
    assert with_shape.returncode == 0, with_shape.stderr


def test_training_from_the_import_starts_at_the_hf_loss(tmp_path, custom_import, hf_models):
    """TP2 x PP2 on 4 gloo ranks, the run config made of the tiny one and model.yaml."""
    from transformers import AutoModelForCausalLM

    from megacode.data.synthetic import SyntheticTokens

    ckpt = custom_import["checkpoint"]
    run_config = tmp_path / "run.yaml"
    model_section = yaml.safe_load((ckpt / "model.yaml").read_text())
    run_config.write_text(yaml.safe_dump({"base": str(TINY_CONFIG), **model_section}))
    seq, batch, seed = 32, 8, 1234
    overrides = [f"data.seq_length={seq}", f"train.global_batch_tokens={seq * batch}", "train.micro_batch_size=2",
                 "train.iters=1", "schedule.warmup_iters=0", "train.eval_interval=0", "logging.dir=null",
                 "parallel.tp=2", "parallel.pp=2", f"checkpoint.load={ckpt}", "checkpoint.finetune=true",
                 "checkpoint.dir=null", f"seed={seed}", "data.num_workers=0"]
    history = tmp_path / "history.json"

    torchrun(4, ["-m", "megacode.train", "--config", str(run_config), "--history-json", str(history)] + overrides)
    steps = json.loads(history.read_text())
    assert len(steps) == 1
    stream = SyntheticTokens(512, seq, seed)  # the trainer's training stream (no data.paths)
    tokens = torch.from_numpy(np.stack([stream[i] for i in range(batch)]))  # [8, 33]
    model = AutoModelForCausalLM.from_pretrained(hf_models["custom"], dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(tokens[:, :-1]).logits
    loss = F.cross_entropy(logits.reshape(-1, 512), tokens[:, 1:].reshape(-1)).item()
    assert steps[0]["loss"] == pytest.approx(loss, abs=1e-5)


def test_model_yaml_names_a_matching_flavor_unless_custom_is_asked(tmp_path, hf_models, imported):
    from megacode.convert import ImportOptions, import_hf

    assert yaml.safe_load((imported["gqa"] / "model.yaml").read_text()) == {"model": {"flavor": "tiny",
                                                                                      "rope_base": 10000.0}}
    out = import_hf(ImportOptions(input=hf_models["gqa"], output=tmp_path / "c", flavor="custom", progress=False))
    model = read_common(step_dir(out, 0))["config"]["model"]
    assert model["flavor"] == "custom" and model["shape"]["hidden_size"] == 64 and model["shape"]["num_query_groups"] == 2

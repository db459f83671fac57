"""Config loading, overrides and layout validation: errors name the offending values."""

import pytest

from megacode.config import ConfigError, load_config, resolve_layout
from megacode.config.loader import config_from_dict
from tests.training.launch import TINY_CONFIG


def test_yaml_and_overrides_build_typed_config():
    cfg = load_config(TINY_CONFIG, ["train.iters=7", "optim.lr=1e-3", "parallel.vp=2", "model.rope_base=1000000",
                                    "data.paths=[{path: a, weight: 0.85}, {path: b, weight: 0.15}]"])
    assert cfg.train.iters == 7 and isinstance(cfg.optim.lr, float) and cfg.optim.lr == 1e-3
    assert cfg.optim.min_lr == pytest.approx(1e-3 / 30)  # recipe: final LR = peak / 30
    assert cfg.parallel.vp == 2 and cfg.model.rope_base == 1e6
    assert [p["weight"] for p in cfg.data.paths] == [0.85, 0.15]
    assert config_from_dict(cfg.to_dict()) == cfg


def test_base_file_is_merged(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {TINY_CONFIG}\ntrain:\n  iters: 3\n")
    cfg = load_config(child)
    assert cfg.train.iters == 3 and cfg.model.flavor == "tiny" and cfg.parallel.tp == 2


@pytest.mark.parametrize("override, message", [
    ("train.itres=5", "unknown config key(s) train.itres"),
    ("optim.lr=fast", "optim.lr must be float, got 'fast'"),
    ("parallel.tp=0", "parallel.tp must be an integer >= 1, got 0"),
    ("parallel.sequence_parallel=true", None),  # valid with tp=2
    ("data.fim.rate=1.5", "data.fim.rate must be in [0, 1], got 1.5"),
    ("model.flavor=llama-9b", "model.flavor 'llama-9b' is not known"),
])
def test_bad_values_name_the_key_and_value(override, message):
    if message is None:
        resolve_layout(load_config(TINY_CONFIG, [override]), 4)
        return
    with pytest.raises(ConfigError) as err:
        resolve_layout(load_config(TINY_CONFIG, [override]), 4)
    assert message in str(err.value)


@pytest.mark.parametrize("overrides, world, message", [
    (["parallel.tp=3", "parallel.pp=1"], 3, "4 attention heads not divisible by parallel.tp=3"),
    (["parallel.tp=1", "parallel.pp=3"], 3, "4 layers not divisible by parallel.pp*parallel.vp = 3*1"),
    (["parallel.pp=2", "parallel.vp=4"], 4, "4 layers not divisible by parallel.pp*parallel.vp = 2*4"),
    (["train.global_batch_tokens=1000"], 4, "train.global_batch_tokens=1000 is not a multiple of data.seq_length=64"),
    (["train.global_batch_tokens=384", "train.micro_batch_size=4"], 4,
     "global batch of 6 sequences"),
    ([], 6, "world size 6 is not divisible by parallel.tp*parallel.pp = 2*2"),
])
def test_layout_errors_before_any_process_group(overrides, world, message):
    with pytest.raises(ConfigError) as err:
        resolve_layout(load_config(TINY_CONFIG, overrides), world)
    assert message in str(err.value)


def test_layout_derives_microbatches_from_tokens():
    cfg = load_config(TINY_CONFIG, ["parallel.tp=1", "parallel.pp=2", "train.global_batch_tokens=4096",
                                    "train.micro_batch_size=2"])
    layout = resolve_layout(cfg, 8)
    assert (layout.dp, layout.global_batch_size, layout.num_microbatches) == (4, 64, 8)


def test_codellama_7b_recipe_batch_on_a_real_cluster_shape():
    # Stage 1: 4M-token batches of 4096 tokens (DESIGN.md §1) on 64 GPUs at TP2 PP2.
    cfg = load_config(None, ["model.flavor=codellama-7b", "parallel.tp=2", "parallel.pp=2",
                             "data.seq_length=4096", "train.global_batch_tokens=4194304"])
    layout = resolve_layout(cfg, 64)
    assert (layout.dp, layout.global_batch_size, layout.num_microbatches) == (16, 1024, 64)

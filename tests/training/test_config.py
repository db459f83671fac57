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


CUSTOM = ["model.flavor=custom", "model.shape={num_layers: 4, hidden_size: 128, num_attention_heads: 8, "
          "num_query_groups: 2, ffn_hidden_size: 344, vocab_size: 500, rope_base: 1e6}"]


def test_custom_shape_serves_every_user_of_the_model_shape():
    """One resolved shape (config.model_shape) for the layout, parameter count, planner and FLOPs."""
    from megacode.config import model_shape
    from megacode.models.params import count_model_parameters
    from megacode.planning import plan_run
    from megacode.training.metrics import flops_per_token

    cfg = load_config(TINY_CONFIG, CUSTOM + ["model.num_layers=2", "data.vocab_size=520",
                                             "parallel.tp=1", "parallel.pp=1"])
    shape = model_shape(cfg)
    assert (shape.name, shape.num_layers, shape.hidden_size, shape.head_dim, shape.vocab_size, shape.rope_base) == \
        ("custom", 2, 128, 16, 520, 1e6)
    assert resolve_layout(cfg, 2).num_layers == 2
    counts = count_model_parameters(cfg)  # Megatron-Core's model on the meta device
    layer = 2 * 128 * 128 + 2 * 128 * 32 + 3 * 128 * 344 + 2 * 128  # q, o; k, v (2 groups x 16); MLP; norms
    assert counts["total"] == shape.parameter_count() == 2 * 520 * 128 + 2 * layer + 128
    assert counts["padding"] == 2 * (640 - 520) * 128
    plan = plan_run(cfg, nodes=1, gpus_per_node=2)
    assert plan.parameters == counts["total"] and plan.padded_vocab == 640
    assert plan.flops_per_token == flops_per_token(shape, 64) == 6 * (counts["total"] - 520 * 128) + 12 * 2 * 128 * 64
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("overrides, message", [
    (["model.flavor=custom"], "model.flavor=custom needs model.shape.num_layers, model.shape.hidden_size, "
                              "model.shape.num_attention_heads, model.shape.ffn_hidden_size, model.shape.vocab_size"),
    (["model.shape.hidden_size=128"], "model.shape is set but model.flavor=tiny names a registered shape"),
    (CUSTOM + ["model.shape.num_query_groups=3"],
     "model custom: num_attention_heads=8 is not divisible by num_query_groups=3"),
    (CUSTOM + ["model.shape.hidden_size=130"],
     "model custom: hidden_size=130 is not divisible by num_attention_heads=8"),
    (CUSTOM + ["model.shape.hidden_size=72"],
     "model custom: head dimension hidden_size/num_attention_heads = 72/8 = 9 must be even for rotary embeddings"),
    (CUSTOM + ["model.shape.ffn_hidden_size=0"], "model.shape.ffn_hidden_size must be positive, got 0"),
    (CUSTOM + ["parallel.tp=4", "parallel.pp=1"], "model custom: 2 KV groups not divisible by parallel.tp=4"),
    (CUSTOM + ["model.shape.num_query_groups=8", "parallel.tp=16", "parallel.pp=1"],
     "model custom: 8 attention heads not divisible by parallel.tp=16"),
])
def test_custom_shape_errors_name_the_values(overrides, message):
    with pytest.raises(ConfigError) as err:
        cfg = load_config(TINY_CONFIG, overrides)
        resolve_layout(cfg, cfg.parallel.tp * cfg.parallel.pp)
    assert message in str(err.value)

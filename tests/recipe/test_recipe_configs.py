"""Recipe configs: every full-size stage config passes the dry run (tools/plan_run.py) for its
default node count without a GPU and fits an 80 GB H100; the paper's numbers (DESIGN.md §1) are in
them; the memory model behaves as its formulas say; the tiny stage configs resolve on 4 ranks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from megacode.config import ConfigError, load_config, resolve_layout
from megacode.config.flavors import get_flavor
from megacode.planning import H100_USABLE_GIB, format_plan, plan_run
from megacode.planning.memory import MemoryShape, estimate, held_layers, layer_activation_bytes
from tests.recipe.conftest import REPO

FLAVORS = ["7b", "13b", "34b", "70b"]
STAGES = ["stage1_code", "stage2_python", "stage3_long_context", "stage4_instruct"]
# Spec values from DESIGN.md §1 (Code Llama §2.2-2.6).
PEAK_LR = {"7b": 3e-4, "13b": 3e-4, "34b": 1.5e-4, "70b": 1.5e-4}
LCFT_STEPS = {"7b": 3000, "13b": 10000, "34b": 11000, "70b": 10000}
LCFT_BATCH = {"7b": 2 * 2**20, "13b": 2 * 2**20, "34b": 2**20, "70b": 2**20}
STAGE_TOKENS = {"stage1_code": 500e9, "stage2_python": 100e9, "stage4_instruct": 5e9}


def shell(command: str) -> str:
    out = subprocess.run(["bash", "-c", f"source launch/stage_lib.sh; {command}"], cwd=REPO, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def config(flavor: str, stage: str):
    return load_config(REPO / "configs" / f"codellama-{flavor}" / f"{stage}.yaml")


@pytest.mark.parametrize("flavor", FLAVORS)
def test_every_stage_plans_and_fits_at_its_default_nodes(flavor):
    for stage in STAGES:
        nodes = int(shell(f"recipe_nodes {flavor} {stage}"))
        plan = plan_run(config(flavor, stage), nodes, config_path=f"configs/codellama-{flavor}/{stage}.yaml")
        text = format_plan(plan)
        print(text)
        assert plan.parameters == get_flavor(f"codellama-{flavor}").parameter_count()
        assert plan.peak_gib < H100_USABLE_GIB, text
        assert "peak" in text and "GPU-hours" in text and "fits" in text
        assert plan.layout.dp * plan.layout.tp * plan.layout.pp == nodes * 8
        assert plan.cfg.parallel.sequence_parallel and plan.cfg.parallel.distributed_optimizer
        assert any("placeholder" in note for note in plan.notes)  # REPLACE prefixes are called out


def test_plan_run_cli_prints_the_estimate_and_refuses_bad_layouts():
    cli = [sys.executable, str(REPO / "tools" / "plan_run.py")]
    ok = subprocess.run(cli + ["--config", "configs/codellama-13b/stage3_long_context.yaml", "--nodes", "16"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "13,016,028,160 parameters" in ok.stdout and "TP4 PP1 VP1 DP32" in ok.stdout and "GiB" in ok.stdout
    bad = subprocess.run(cli + ["--config", "configs/codellama-70b/stage1_code.yaml", "--nodes", "3"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "world size 24 is not divisible by parallel.tp*parallel.pp = 4*4" in bad.stderr
    # 70B long context without recompute: valid, but the activations of 80 layers at 16k do not fit.
    big = subprocess.run(cli + ["--config", "configs/codellama-70b/stage3_long_context.yaml", "--nodes", "16",
                                "parallel.recompute=none"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert big.returncode == 3 and "DOES NOT FIT" in big.stdout, big.stdout + big.stderr


def test_paper_numbers_are_in_the_configs():
    for flavor in FLAVORS:
        s1, s2, s3, s4 = (config(flavor, s) for s in STAGES)
        for cfg in (s1, s2, s3, s4):
            assert cfg.schedule.warmup_iters == 1000 and cfg.schedule.style == "cosine"
            assert cfg.optim.min_lr == pytest.approx(cfg.optim.lr / 30)
            assert (cfg.optim.adam_beta1, cfg.optim.adam_beta2, cfg.optim.adam_eps) == (0.9, 0.95, 1e-5)
            assert (cfg.optim.weight_decay, cfg.optim.clip_grad) == (0.1, 1.0)
            assert cfg.checkpoint.finetune and cfg.checkpoint.load
        assert s1.optim.lr == PEAK_LR[flavor] and s2.optim.lr == 1e-4 and s3.optim.lr == 2e-5
        assert [e["weight"] for e in s1.data.paths] == [0.85, 0.08, 0.07]
        assert [e["weight"] for e in s2.data.paths] == [0.75, 0.10, 0.10, 0.05]
        assert s1.data.fim.enabled == (flavor != "34b") and not s2.data.fim.enabled and not s4.data.fim.enabled
        assert s1.data.seq_length == s2.data.seq_length == s4.data.seq_length == 4096
        assert s1.train.global_batch_tokens == s2.train.global_batch_tokens == 4 * 2**20
        assert s4.train.global_batch_tokens == 524288
        for stage, cfg in (("stage1_code", s1), ("stage2_python", s2), ("stage4_instruct", s4)):
            tokens = cfg.train.iters * cfg.train.global_batch_tokens
            assert 0 <= tokens - STAGE_TOKENS[stage] < cfg.train.global_batch_tokens, (flavor, stage, tokens)
        # Long-context fine-tuning: 16,384 tokens, RoPE θ 10,000 -> 1,000,000, per-size batch and steps.
        assert s3.data.seq_length == 16384 and s3.model.rope_base == 1e6 and s1.model.rope_base is None
        assert s4.model.rope_base == 1e6
        assert s3.train.iters == LCFT_STEPS[flavor] and s3.train.global_batch_tokens == LCFT_BATCH[flavor]
        assert [e["path"] for e in s3.data.paths] == [e["path"] for e in s1.data.paths]
        # Instruct: dialogs with the answer-only mask, rehearsal 6% code and 2% NL from stage 1's data.
        kinds = [(e.get("kind", "text"), e["weight"]) for e in s4.data.paths]
        assert kinds == [("dialog", 0.92), ("text", 0.06), ("text", 0.02)]
        assert s4.data.paths[1]["path"] == s1.data.paths[0]["path"]  # code
        assert s4.data.paths[2]["path"] == s1.data.paths[2]["path"]  # natural language


def test_stage_chain_directories_match_the_launch_scripts():
    """The YAML's own checkpoint.dir/load are what launch/stage_lib.sh passes with RUNS=runs."""
    for flavor in FLAVORS:
        for stage in STAGES:
            cfg = config(flavor, stage)
            line = shell(f'stage_command {stage} {flavor} && printf "%s\\n" "${{STAGE_OVERRIDES[@]}}"')
            overrides = dict(item.split("=", 1) for item in line.splitlines())
            assert overrides["checkpoint.dir"] == cfg.checkpoint.dir
            assert overrides["checkpoint.load"] == cfg.checkpoint.load
            assert overrides["logging.dir"] == cfg.logging.dir
    assert config("7b", "stage2_python").checkpoint.load == config("7b", "stage1_code").checkpoint.dir
    assert config("7b", "stage3_long_context").checkpoint.load == config("7b", "stage1_code").checkpoint.dir
    assert config("7b", "stage4_instruct").checkpoint.load == config("7b", "stage3_long_context").checkpoint.dir


def _shape(**kw):
    base = dict(flavor=get_flavor("codellama-7b"), num_layers=32, padded_vocab=32128, seq_length=4096,
                micro_batch=1, num_microbatches=16, tp=4, pp=4, vp=None, dp=8, sequence_parallel=True,
                distributed_optimizer=True, recompute="none", flash_attention=True)
    base.update(kw)
    return MemoryShape(**base)


def test_memory_model_follows_its_formulas():
    f = get_flavor("codellama-7b")
    s, h = 4096, f.hidden_size
    # Per-layer count for Llama (megacode/planning/memory.py): s·b·(12h + 4kv + 8f) bytes, /t with SP.
    per_layer = s * (12 * h + 4 * h + 8 * f.ffn_hidden_size)
    flash_lse = 4 * f.num_attention_heads * s
    assert layer_activation_bytes(_shape(tp=1, sequence_parallel=False)) == per_layer + flash_lse
    assert layer_activation_bytes(_shape(tp=4)) == (per_layer + flash_lse) / 4
    # Without SP the norm regions (8sbh) stay whole; without flash attention the s² scores are kept.
    no_sp = 8 * s * h + (per_layer - 8 * s * h) / 4 + flash_lse / 4
    assert layer_activation_bytes(_shape(sequence_parallel=False)) == no_sp
    unfused = layer_activation_bytes(_shape(flash_attention=False))
    assert unfused == per_layer / 4 + 2 * f.num_attention_heads * s * s / 4
    # Pipeline: 1F1B first stage holds L layers' worth; interleaved L(1 + (p-1)/(p·v)); last stage less.
    assert held_layers(_shape(), 0) == 32 and held_layers(_shape(), 3) == 8
    assert held_layers(_shape(vp=2), 0) == pytest.approx(32 * (1 + 3 / 8))
    assert held_layers(_shape(num_microbatches=2), 0) == 16  # fewer micro-batches than stages
    # Optimizer state shrinks as 12/DP bytes per parameter; full recompute keeps far less.
    one, many = estimate(_shape(dp=1))[0], estimate(_shape(dp=16))[0]
    assert one.optimizer == pytest.approx(16 * many.optimizer) and one.weights == many.weights
    assert estimate(_shape(recompute="full"))[0].activations < 0.1 * estimate(_shape())[0].activations


def test_tiny_stage_configs_resolve_on_four_ranks():
    tiny = {s: load_config(REPO / "configs" / "tiny" / f"{s}.yaml") for s in STAGES}
    for stage, cfg in tiny.items():
        layout = resolve_layout(cfg, 4)
        assert (layout.tp, layout.pp) == (2, 2) and cfg.checkpoint.finetune, stage
    assert tiny["stage1_code"].data.fim.enabled and not tiny["stage2_python"].data.fim.enabled
    assert tiny["stage3_long_context"].model.rope_base == 1e6 and tiny["stage1_code"].model.rope_base is None
    assert tiny["stage3_long_context"].data.seq_length == 4 * tiny["stage1_code"].data.seq_length
    assert tiny["stage4_instruct"].data.paths[0]["kind"] == "dialog"
    with pytest.raises(ConfigError):
        resolve_layout(load_config(REPO / "configs" / "tiny" / "stage1_code.yaml", ["parallel.pp=3"]), 4)

"""The experiments' pieces without training: corpus split and chunking, configs, direction checks."""

from __future__ import annotations

import pytest

from megacode.config import ConfigError


def test_every_experiment_config_loads_and_micro_keeps_the_code_paths():
    from megacode.experiments import EXPERIMENTS, SCALES
    from megacode.experiments.config import config_path, load_experiment

    for exp in EXPERIMENTS:
        small, micro = (load_experiment(config_path(exp, s), experiment=exp) for s in ("small", "micro"))
        assert set(SCALES) == {"micro", "small"}
        for cfg in (small, micro):
            shape = cfg.run_config().model.shape
            assert shape.hidden_size // shape.num_attention_heads >= 64  # RoPE as in the real model
        assert micro.run_config().train.iters < small.run_config().train.iters
        assert micro.corpus.train_bytes < small.corpus.train_bytes
    fim, lcft = (load_experiment(config_path(e, "small")) for e in EXPERIMENTS)
    assert fim.corpus == lcft.corpus and fim.tokenizer == lcft.tokenizer  # one cache entry for both
    assert (fim.fim.rate, fim.fim.spm_rate) == (0.9, 0.5) and lcft.lcft.new_rope_base == 1e6


def test_bad_experiment_configs_fail_naming_the_value(tmp_path):
    from megacode.experiments.config import config_path, load_experiment

    with pytest.raises(ConfigError, match="fim.rate"):
        load_experiment(config_path("fim", "micro"), ["fim.rate=1.5"])
    with pytest.raises(ConfigError, match="unknown config key"):
        load_experiment(config_path("fim", "micro"), ["fim.eval.cases=3"])
    with pytest.raises(ConfigError, match="optim.lr"):  # the run section goes through megacode's own checks
        load_experiment(config_path("lcft", "micro"), ["run.optim.lr=-1"])
    with pytest.raises(ConfigError, match="not 'lcft'"):
        load_experiment(config_path("fim", "micro"), experiment="lcft")


def test_files_split_by_path_hash_and_budgets():
    from megacode.experiments.config import CorpusConfig
    from megacode.experiments.corpus import fingerprint, select_files

    cfg = CorpusConfig(sources=["stdlib"], train_bytes=400_000, heldout_bytes=100_000, heldout_fraction=0.2)
    files = select_files(cfg, seed=7)
    train, held = ({f.relpath for f in files[s]} for s in ("train", "heldout"))
    assert train and held and not train & held
    assert 400_000 <= sum(f.size for f in files["train"]) <= 400_000 + cfg.max_file_bytes
    assert select_files(cfg, seed=7) == files  # deterministic
    other = select_files(cfg, seed=8)
    assert {f.relpath for f in other["heldout"]} != held  # the seed decides the split
    bigger = select_files(CorpusConfig(sources=["stdlib"], train_bytes=800_000, heldout_bytes=100_000,
                                       heldout_fraction=0.2), seed=7)
    assert train <= {f.relpath for f in bigger["train"]}  # a larger budget only adds files
    assert fingerprint(files)["files"] == {"train": len(train), "heldout": len(held)}


def test_chunks_are_whole_top_level_blocks_that_concatenate_back():
    from megacode.experiments.corpus import chunk_source

    text = "import os\n\n\ndef f(x):\n    y = x\n\n    return y\n\n\nclass A:\n    pass\n" * 20
    chunks = chunk_source(text, target=120, limit=200)
    assert "".join(chunks) == text
    assert all(len(c) <= 200 for c in chunks)
    assert all(c.startswith(("import", "def", "class")) for c in chunks)  # cut before top-level blocks only
    long_function = "def g():\n" + "".join(f"    a{i} = {i}\n" for i in range(60)) + "\n    return 0\n"
    pieces = chunk_source(long_function, target=100, limit=150)
    assert "".join(pieces) == long_function and all(len(p) <= 150 for p in pieces) and len(pieces) > 1


def _lcft(base, new, kept):
    return {"train_length": 4, "lcft_length": 16, "eval_lengths": [2, 4, 8, 16, 32, 64],
            "perplexity": {"base": base, "lcft_theta_1e6": new, "lcft_theta_1e4": kept}}


def test_direction_checks_read_the_numbers_as_stated():
    from megacode.experiments.report import fim_checks, lcft_checks

    fim = {"l2r_loss": {"fim": 2.02, "no_fim": 2.0},
           "infill_loss": {"psm": {"fim": 1.5, "l2r_prefix_only": 2.0}, "spm": {"fim": 1.95, "l2r_prefix_only": 2.0}},
           "infill_exact_match": {"single_line": {"psm": 0.3, "spm": 0.2, "l2r": 0.1},
                                  "multi_line": {"psm": 0.1, "spm": 0.0, "l2r": 0.05}}}
    assert [h for _, _, h in fim_checks(fim)] == [True, True, False, True, False]
    paper_like = _lcft([10, 9, 30, 90, 200, 400], [11, 10, 9.5, 9, 10, 12], [10, 9, 8.8, 8.7, 20, 60])
    assert [h for _, _, h in lcft_checks(paper_like)] == [True, True, True, True]
    no_gain = _lcft([10, 9, 9.5, 9.6, 9.7, 9.8], [11, 10, 11, 12, 30, 80], [10, 9, 8.8, 8.7, 20, 60])
    assert [h for _, _, h in lcft_checks(no_gain)] == [False, False, False, False]


def test_nothing_below_the_top_floor_imports_the_experiments():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "megacode"
    offenders = []
    for path in root.rglob("*.py"):
        if path.parent.name == "experiments":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if n.startswith("megacode.experiments")]
    assert not offenders


def test_cli_takes_overrides_after_the_options():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce_cli", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    args = cli.parse_args(["lcft", "--scale", "micro", "--out", "o", "--reuse", "lcft.run.train.iters=9", "seed=3"])
    assert (args.experiment, args.scale, args.reuse) == ("lcft", "micro", True)
    assert args.overrides == ["lcft.run.train.iters=9", "seed=3"]
    assert cli.main(["fim", "--scale", "micro", "--out", "o", "fim.rate=2"]) == cli.EXIT_CONFIG_ERROR

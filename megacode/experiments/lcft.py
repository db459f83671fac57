"""Long-context fine-tuning with and without the new RoPE base (Code Llama §2.4, Figure 4a, Table 18).

A base model trains on whole training files at sequence length L with θ 10,000; two
continuations start from its weights (checkpoint.load + checkpoint.finetune, as the recipe's
stage 3) and train at 4L for the same steps and data: `lcft_theta_1e6` with model.rope_base
10^6, `lcft_theta_1e4` keeping 10^4. Evaluated on held-out files:

- perplexity of the same tokens (the first 16L of each file) read with contexts of L/2 .. 16L
  (megacode.eval.lm_scoring.loss_by_context_length);
- key retrieval by distance (megacode.eval.key_retrieval), when `lcft.eval.retrieval_prompts` > 0.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Dict

import numpy as np

from megacode.config import model_shape, rope_base
from megacode.experiments.assets import Assets
from megacode.experiments.config import ExperimentConfig
from megacode.experiments.launch import TrainedModel, data_section, format_duration, load_model, train_and_export

MODELS = ("base", "lcft_theta_1e6", "lcft_theta_1e4")


def lengths(cfg: ExperimentConfig) -> tuple[int, int, list[int]]:
    """(L, LCFT length, evaluation lengths); every evaluation length must divide the longest."""
    L = cfg.run_config().data.seq_length
    evals = sorted({int(round(f * L)) for f in cfg.lcft.eval.length_factors})
    bad = [n for n in evals if n < 1 or evals[-1] % n]
    if bad:
        raise ValueError(f"lcft.eval.length_factors {cfg.lcft.eval.length_factors} give lengths {evals} at L={L}; "
                         f"each must divide the longest ({evals[-1]}): {bad} do not")
    return L, cfg.lcft.length_factor * L, evals


def train_models(cfg: ExperimentConfig, assets: Assets, out: Path, log, reuse: bool) -> Dict[str, TrainedModel]:
    from megacode.tokenizer import load

    tok = load(assets.tokenizer_model)
    L, long_length, _ = lengths(cfg)
    base_run = cfg.run_config()
    base_theta = rope_base(base_run, model_shape(base_run))
    common = {"model": {"shape": {"vocab_size": tok.vocab_size}},
              "data": data_section(assets.datasets["train_files"], assets.tokenizer_model, L), "seed": cfg.seed}
    models = {"base": train_and_export("base", cfg.run_dict(common), out, cfg.nproc, cfg.threads_per_rank,
                                       assets.tokenizer_model, log, reuse)}
    for name, theta in (("lcft_theta_1e6", cfg.lcft.new_rope_base), ("lcft_theta_1e4", base_theta)):
        stage = {"model": {"rope_base": float(theta)}, "data": {"seq_length": long_length},
                 "checkpoint": {"load": str(models["base"].checkpoint), "finetune": True}, "seed": cfg.seed + 1}
        models[name] = train_and_export(name, cfg.run_dict(common, cfg.lcft.run, stage), out, cfg.nproc,
                                        cfg.threads_per_rank, assets.tokenizer_model, log, reuse)
    return models


def rope_coverage(head_dim: int, theta: float, spans: Dict[str, int]) -> Dict[str, float]:
    """Share of RoPE's frequency pairs whose wavelength 2π θ^(2i/d) exceeds each span: the pairs
    that never turn a full circle within it (the positions such a pair sees beyond are new)."""
    waves = [2 * math.pi * theta ** (2 * i / head_dim) for i in range(head_dim // 2)]
    return {name: sum(w > span for w in waves) / len(waves) for name, span in spans.items()}


def evaluate(cfg: ExperimentConfig, assets: Assets, models: Dict[str, TrainedModel], log) -> dict:
    from megacode.data.indexed import IndexedDataset
    from megacode.eval.induction import copy_probe, repeated_sequences
    from megacode.eval.key_retrieval import accuracy_by_distance, make_prompts
    from megacode.eval.lm_scoring import loss_by_context_length
    from megacode.tokenizer import load

    tok = load(assets.tokenizer_model)
    e = cfg.lcft.eval
    L, long_length, evals = lengths(cfg)
    span = evals[-1]
    ds = IndexedDataset(assets.datasets["heldout_files"])
    long_enough = [k for k, n in enumerate(np.asarray(ds.sequence_lengths)) if n >= span + 1]
    if not long_enough:
        raise ValueError(f"no held-out file has {span + 1} tokens (16L at L={L}); raise corpus.heldout_bytes")
    picked = sorted(random.Random(cfg.seed).sample(long_enough, min(e.files, len(long_enough))))
    docs = [np.asarray(ds[k][:span + 1]) for k in picked]
    log(f"evaluation: {len(docs)} held-out files of >= {span + 1} tokens (of {len(long_enough)}), their first "
        f"{span} tokens read with contexts {evals}")
    prompts = []
    if e.retrieval_prompts:
        distances = sorted({int(round(f * L)) for f in e.retrieval_factors})
        prompts = make_prompts(tok, assets.documents("heldout_files"), distances, e.retrieval_prompts, cfg.seed)
        log(f"key retrieval: {e.retrieval_prompts} prompts at each distance {distances}")
    probe_seqs = repeated_sequences(tok, 32, L // 2, cfg.seed)  # each run and its repeat within L
    perplexity, loss, accuracy, probe = {}, {}, {}, {}
    for name in MODELS:
        gen = load_model(models[name].hf_dir, cfg.eval_threads)
        start = time.monotonic()
        by_length = loss_by_context_length(gen.model, docs, evals, span)
        loss[name] = [by_length[n] for n in evals]
        perplexity[name] = [math.exp(v) for v in loss[name]]
        log(f"{name}: perplexity " + ", ".join(f"{n}: {p:.2f}" for n, p in zip(evals, perplexity[name]))
            + f" ({format_duration(time.monotonic() - start)})")
        probe[name] = copy_probe(gen.model, probe_seqs, L // 2)
        log(f"{name}: copy probe: loss {probe[name]['first']:.3f} on random runs, {probe[name]['repeat']:.3f} on "
            f"their repeat")
        if prompts:
            acc = accuracy_by_distance(gen.model, prompts)
            accuracy[name] = [acc[d] for d in sorted(acc)]
            log(f"{name}: key retrieval " + ", ".join(f"{d}: {a:.2f}" for d, a in acc.items()))
        del gen
    shape = model_shape(cfg.run_config())
    head_dim = shape.hidden_size // shape.num_attention_heads
    spans = {"L": L, "4L": long_length, "16L": span}
    results = {
        "train_length": L, "lcft_length": long_length, "eval_lengths": evals,
        "perplexity": perplexity, "loss": loss,
        "rope_base": {"base": rope_base(cfg.run_config(), shape), "lcft_theta_1e6": cfg.lcft.new_rope_base,
                      "lcft_theta_1e4": rope_base(cfg.run_config(), shape)},
        "rope_analysis": {"head_dim": head_dim,
                          "pairs_longer_than": {f"theta_{t:g}": rope_coverage(head_dim, t, spans)
                                                for t in (1e4, cfg.lcft.new_rope_base)},
                          "paper_7b_pairs_longer_than": {f"theta_{t:g}": rope_coverage(128, t, {"4K": 4096,
                                                         "16K": 16384, "100K": 100_000}) for t in (1e4, 1e6)}},
        "details": {"files": len(docs), "tokens_per_length": span * len(docs), "copy_probe": probe},
    }
    if prompts:
        results["retrieval"] = {"distances": sorted({p.distance for p in prompts}), "accuracy": accuracy,
                                "prompts_per_distance": e.retrieval_prompts,
                                "mean_tokens_back": [float(np.mean([p.tokens_back for p in prompts if p.distance == d]))
                                                     for d in sorted({p.distance for p in prompts})]}
    return results


def run(cfg: ExperimentConfig, assets: Assets, out: Path, log, reuse: bool = False) -> dict:
    models = train_models(cfg, assets, out, log, reuse)
    results = evaluate(cfg, assets, models, log)
    results["tokens"] = {name: m.tokens for name, m in models.items()}
    results["runs"] = {name: {"seconds": m.seconds, "tokens": m.tokens, "final_train_loss": m.final_loss,
                              "command": m.command, "checkpoint": str(m.checkpoint), "reused": m.reused}
                       for name, m in models.items()}
    return results

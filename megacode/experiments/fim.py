"""FIM at rate 0.9 vs no FIM (Code Llama Table 5 and Table 14; Bavarian et al. 2022).

Two models with the same run config, seed, data order and token count, trained on chunked
documents of the training files: `fim` with data.fim rate 0.9 (half PSM, half SPM: the C++
transform of megacode.data.fim_dataset), `no_fim` without. Evaluated on held-out files
(megacode.eval.lm_scoring, megacode.eval.heldout_infill):

- left-to-right loss of both, per token over whole held-out documents (`<s> text </s>`, cut at
  the training sequence length);
- loss of whole-line middles given prefix and suffix, PSM and SPM prompts (FIM model), against
  the same middle tokens given the prefix alone (no-FIM model, `l2r_prefix_only`);
- greedy exact match of single-line and multi-line middles: PSM and SPM (FIM model) and the
  no-FIM model continuing the prefix, cut at the middle's line count (`l2r`).

Infilling cases come only from documents that fit a training sequence with the 4 FIM pieces,
i.e. documents the FIM model could have been trained to infill.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from megacode.experiments.assets import Assets
from megacode.experiments.config import ExperimentConfig
from megacode.experiments.launch import TrainedModel, data_section, format_duration, load_model, train_and_export

MODELS = ("fim", "no_fim")
FIM_PIECES = 4
PROBE_COUNT, PROBE_LENGTH = 32, 64  # copy probe: 32 random runs of 64 pieces, each repeated once


def train_models(cfg: ExperimentConfig, assets: Assets, out: Path, log, reuse: bool) -> Dict[str, TrainedModel]:
    from megacode.tokenizer import load

    tok = load(assets.tokenizer_model)
    seq = cfg.run_config().data.seq_length
    common = {"model": {"shape": {"vocab_size": tok.vocab_size}},
              "data": data_section(assets.datasets["train_chunks"], assets.tokenizer_model, seq), "seed": cfg.seed}
    overrides = {"fim": {"data": {"fim": {"enabled": True, "rate": cfg.fim.rate, "spm_rate": cfg.fim.spm_rate}}},
                 "no_fim": {"data": {"fim": {"enabled": False}}}}
    return {name: train_and_export(name, cfg.run_dict(common, overrides[name]), out, cfg.nproc, cfg.threads_per_rank,
                                   assets.tokenizer_model, log, reuse) for name in MODELS}


def _progress(log, what: str) -> Callable[[int, int], None]:
    started, last = time.monotonic(), [time.monotonic()]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 20 or done == total:
            last[0] = now
            eta = (now - started) / done * (total - done)
            log(f"{what}: {done}/{total} | ETA {format_duration(eta)}")
    return report


def _mean(losses: List[np.ndarray]) -> float:
    """Token-weighted mean loss."""
    return float(np.concatenate(losses).mean())


def _suffix_use(model, tok, cases, infill: dict, seed: int) -> dict:
    """How much the FIM model reads the suffix (the middle's loss with another case's suffix) and
    where it would stop (the loss of <EOT> right after the true middle), per layout."""
    from megacode.eval import heldout_infill as hi
    from megacode.eval.lm_scoring import span_losses

    other = hi.with_other_suffixes(cases, seed)
    return {layout: {"true_suffix": infill[layout],
                     "other_suffix": _mean(span_losses(model, hi.loss_pairs(tok, other, layout), desc="other suffix")),
                     "eot_after_middle": _mean(span_losses(model, hi.eot_pairs(tok, cases, layout), desc="<EOT>"))}
            for layout in ("psm", "spm")}


def evaluate(cfg: ExperimentConfig, assets: Assets, models: Dict[str, TrainedModel], log) -> dict:
    from megacode.data.indexed import IndexedDataset
    from megacode.eval import heldout_infill as hi
    from megacode.eval.induction import copy_probe, repeated_sequences
    from megacode.eval.lm_scoring import span_losses, token_losses
    from megacode.tokenizer import load

    tok = load(assets.tokenizer_model)
    e, seq = cfg.fim.eval, cfg.run_config().data.seq_length
    texts = assets.documents("heldout_chunks")
    ds = IndexedDataset(assets.datasets["heldout_chunks"])
    lengths = np.asarray(ds.sequence_lengths)
    if len(texts) != len(ds) or list(ds[0][1:-1]) != tok.encode(texts[0]):
        raise RuntimeError(f"{assets.texts['heldout_chunks']} does not match {assets.datasets['heldout_chunks']}")
    rng = random.Random(cfg.seed)
    l2r_docs = [np.asarray(ds[k][:seq + 1]) for k in sorted(rng.sample(range(len(ds)), min(e.documents, len(ds))))]
    fit = [k for k in range(len(ds)) if lengths[k] + FIM_PIECES <= seq + 1]  # whole in a sample after the transform
    fit_texts = [texts[k] for k in fit]
    loss_cases = hi.make_cases(tok, fit_texts, e.loss_cases, 1, e.loss_max_lines, cfg.seed)
    match_cases = {"single_line": hi.make_cases(tok, fit_texts, e.match_cases, 1, 1, cfg.seed + 1),
                   "multi_line": hi.make_cases(tok, fit_texts, e.match_cases, 2, e.multi_line_max, cfg.seed + 2)}
    mismatches = sum(not hi.training_layout_matches(tok, c, spm) for c in loss_cases for spm in (False, True))
    log(f"evaluation: {len(l2r_docs)} held-out documents, {len(loss_cases)} middles for the loss, "
        f"{len(match_cases['single_line'])} single-line and {len(match_cases['multi_line'])} multi-line cases; "
        f"prompt + middle differs from the C++ training layout in {mismatches} of {2 * len(loss_cases)}")

    plan = {"fim": {"loss": ("psm", "spm", "l2r"), "match": ("psm", "spm")},
            "no_fim": {"loss": ("l2r",), "match": ("l2r",)}}
    l2r_loss, infill_loss, matches, samples, probe, suffix_use = {}, {}, {}, {}, {}, {}
    at_line_count = {}  # PSM / SPM outputs cut at the true middle's line count, as l2r's are
    probe_seqs = repeated_sequences(tok, PROBE_COUNT, PROBE_LENGTH, cfg.seed)
    for name in MODELS:
        gen = load_model(models[name].hf_dir, cfg.eval_threads)
        start = time.monotonic()
        l2r_loss[name] = _mean(token_losses(gen.model, l2r_docs, desc=f"{name} l2r loss"))
        infill_loss[name] = {layout: _mean(span_losses(gen.model, hi.loss_pairs(tok, loss_cases, layout),
                                                       desc=f"{name} {layout} middles"))
                             for layout in plan[name]["loss"]}
        probe[name] = copy_probe(gen.model, probe_seqs, PROBE_LENGTH)
        if name == "fim":
            suffix_use = _suffix_use(gen.model, tok, loss_cases, infill_loss[name], cfg.seed)
        log(f"{name}: copy probe: loss {probe[name]['first']:.3f} on random runs, {probe[name]['repeat']:.3f} "
            f"on their repeat")
        log(f"{name}: held-out l2r loss {l2r_loss[name]:.4f}; middle loss "
            + ", ".join(f"{k} {v:.4f}" for k, v in infill_loss[name].items())
            + f" ({format_duration(time.monotonic() - start)})")
        for kind, cases in match_cases.items():
            for layout in plan[name]["match"]:
                outputs = hi.generate_middles(gen, tok, cases, layout, cap=e.max_new_tokens,
                                              progress=_progress(log, f"{name} {kind} {layout}"))
                matches.setdefault(kind, {})[layout] = hi.match_rate(outputs, cases)
                if layout != "l2r":
                    at_line_count.setdefault(kind, {})[layout] = hi.match_rate(
                        [hi.first_lines(o, c.lines) for o, c in zip(outputs, cases)], cases)
                samples[f"{kind}/{layout}"] = [{"prefix_tail": c.prefix[-200:], "middle": c.middle, "output": o}
                                               for c, o in list(zip(cases, outputs))[:5]]
        log(f"{name}: exact match " + "; ".join(f"{kind} " + ", ".join(f"{k} {v:.3f}" for k, v in m.items())
                                                 for kind, m in matches.items()))
        del gen
    return {
        "l2r_loss": {"fim": l2r_loss["fim"], "no_fim": l2r_loss["no_fim"]},
        "infill_loss": {layout: {"fim": infill_loss["fim"][layout], "l2r_prefix_only": infill_loss["no_fim"]["l2r"]}
                        for layout in ("psm", "spm")},
        "infill_exact_match": {kind: {k: matches[kind][k] for k in ("psm", "spm", "l2r")} for kind in match_cases},
        "details": {
            "fim_model_prefix_only_loss": infill_loss["fim"]["l2r"],
            "l2r_documents": len(l2r_docs), "l2r_tokens": int(sum(d.size - 1 for d in l2r_docs)),
            "loss_cases": hi.describe(loss_cases),
            "match_cases": {k: hi.describe(v) for k, v in match_cases.items()},
            "training_layout_mismatches": mismatches,
            "suffix_use": suffix_use,
            "exact_match_at_line_count": at_line_count,
            "copy_probe": probe,
            "samples": samples,
        },
    }


def fim_probe(model: TrainedModel) -> str:
    """The trainer's FIM summary line (share of whole documents transformed, tokens dropped...)."""
    for line in (model.run_dir / "train.log").read_text().splitlines():
        if "data: FIM on" in line and "probe: " in line:
            return line.split("probe: ", 1)[1]
    return "not found in train.log"


def run(cfg: ExperimentConfig, assets: Assets, out: Path, log, reuse: bool = False) -> dict:
    models = train_models(cfg, assets, out, log, reuse)
    log(f"fim: the trainer's FIM probe: {fim_probe(models['fim'])}")
    results = evaluate(cfg, assets, models, log)
    results["details"]["fim_probe"] = fim_probe(models["fim"])
    results["tokens"] = models["fim"].tokens
    results["runs"] = {name: {"seconds": m.seconds, "tokens": m.tokens, "final_train_loss": m.final_loss,
                              "command": m.command, "checkpoint": str(m.checkpoint), "reused": m.reused}
                       for name, m in models.items()}
    return results

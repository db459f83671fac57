#!/usr/bin/env python
"""Print training samples of a run config's data: ids, decoded text, and where they come from.

    python tools/inspect_data.py --config configs/tiny/pretrain.yaml data.paths=[...] --samples 0,1,2
    python tools/inspect_data.py --config run.yaml --step 100 --world-size 64 --limit 4
    python tools/inspect_data.py --config run.yaml --split valid --samples 0 --tokenizer-model tok.model

Samples are numbered as the loader takes them (global sample index); `--step N` shows the
samples of optimizer step N (0-based: consumed = N x global batch) with the micro-batch and DP
rank that read each at `--world-size` processes. Each sample lists its (dataset, document,
token range) pieces; the text marks document starts ⟦doc D @offset⟧ and EOS tokens ⟦EOS⟧
and, with data.fim.enabled, the FIM parts of transformed documents (⟦FIM PSM: prefix⟧ ⟦suffix⟧
⟦middle⟧ ⟦end of middle⟧, megacode/data/fim.py). Builds the index caches like training does
when they are missing.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from megacode.config import ConfigError, load_config, resolve_layout  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML run config")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--samples", default=None, help="comma-separated global sample indices (default 0)")
    which.add_argument("--step", type=int, default=None, help="the samples of optimizer step N (0-based)")
    p.add_argument("--split", choices=["train", "valid"], default="train")
    p.add_argument("--tokenizer-model", default=None, help="SentencePiece model to decode with "
                   "(default: data.tokenizer_model)")
    p.add_argument("--world-size", type=int, default=None, help="processes of the run (default tp x pp: DP 1)")
    p.add_argument("--limit", type=int, default=8, help="with --step: print at most this many samples")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. data.seq_length=128")
    return p.parse_intermixed_args(argv)


def step_samples(layout, step: int, limit: int) -> list:
    """[(global index, 'step N, micro-batch m, dp rank r')] of step `step`, the first `limit`."""
    gbs, per_micro = layout.global_batch_size, layout.micro_batch_size * layout.dp
    out = []
    for offset in range(min(gbs, limit)):
        m, r = offset // per_micro, offset % per_micro // layout.micro_batch_size
        out.append((step * gbs + offset, f"step {step}, micro-batch {m}, dp rank {r}"))
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        layout = resolve_layout(cfg, args.world_size or cfg.parallel.tp * cfg.parallel.pp)
        if args.split == "valid" and not (cfg.train.eval_interval and cfg.train.eval_iters):
            cfg.train.eval_interval, cfg.train.eval_iters = 1, max(cfg.train.eval_iters, 1)  # build a valid set
        samples = [int(s) for s in args.samples.split(",")] if args.samples else [0]
    except (ConfigError, ValueError) as e:
        print(f"inspect_data: error: {e}", file=sys.stderr)
        return 2
    import megacode.data.fim  # noqa: F401  (registers the FIM part markers)
    from megacode.data.fim_dataset import mark_fim_sample
    from megacode.data.sample_view import render, view_sample
    from megacode.data.training_data import build_sample_datasets

    try:
        train, valid = build_sample_datasets(cfg, layout)
    except (ConfigError, ValueError, OSError) as e:
        print(f"inspect_data: error: {e}", file=sys.stderr)
        return 2
    dataset = train if args.split == "train" else valid
    if dataset is None:
        print(f"inspect_data: error: no validation data (data.valid_paths empty, data.split={cfg.data.split!r})",
              file=sys.stderr)
        return 2
    if args.step is not None:
        if not 0 <= args.step < len(dataset) // layout.global_batch_size:
            print(f"inspect_data: error: --step {args.step} outside [0, {len(dataset) // layout.global_batch_size})"
                  f" (train.iters={cfg.train.iters})", file=sys.stderr)
            return 2
        chosen = step_samples(layout, args.step, args.limit)
    else:
        chosen = [(i, "") for i in samples]
    tokenizer_model = args.tokenizer_model or cfg.data.tokenizer_model
    tokenizer = None
    if tokenizer_model:
        from megacode.tokenizer import load

        tokenizer = load(tokenizer_model)
    print(f"{args.split}: {dataset!r}")
    for index, where in chosen:
        if not 0 <= index < len(dataset):
            print(f"inspect_data: error: sample {index} outside [0, {len(dataset)}) of the {args.split} set",
                  file=sys.stderr)
            return 2
        view = view_sample(dataset, index, tokenizer)
        fim_note = mark_fim_sample(view, dataset, index)  # FIM: pieces where the transform put them
        print(render(view, tokenizer, f" of {args.split}" + (f" ({where})" if where else "")) + fim_note)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""GPU check: a 7B-shaped Llama on one GPU, in every precision and layer spec the machine offers,
each against a bare Megatron-Core loop on the same model. One command, within 8 minutes on an H100:

    python tools/gpu_check.py [--iters 12] [--warmup 3] [--budget-minutes 8]

Model: configs/gpu/check_7b.yaml (Code Llama 7B shapes with 4 layers, seq 4096, 8 micro-batches
of 1 per step). Rows:
  bf16 te     Transformer Engine layers (`model.attention_backend=auto` with TE present), BF16
  bf16 sdpa   Megatron-Core's own modules with PyTorch's scaled_dot_product_attention
              (`model.attention_backend=sdpa`): what a GPU machine without TE runs
  fp8 te      TE layers with FP8 linears (`model.fp8=true`; Hopper/Ada or later)
Each row is tools/bench_train.py's comparison: `megacode.train` as a user runs it (the real
data loader over an indexed dataset, the numerics guard, TensorBoard logging every step), then
tools/bench_train_bare.py on the same config; step time is the median wall time between step
ends after --warmup steps. Printed: tokens/s/GPU, model TFLOP/s/GPU and MFU (DESIGN.md §5, from
megacode's step time), megacode's and the bare loop's step time and their ratio. A row whose
requirements are missing prints `SKIP <row>: why`; so does a row that would overrun the time
budget. Without CUDA the check prints one SKIP line and exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
CONFIG = REPO / "configs" / "gpu" / "check_7b.yaml"
FIRST_ROW_ESTIMATE_S = 150.0  # two start-ups of a 1B-parameter model plus 2 x 12 steps, before any row ran


def rows(te_present: bool, fp8_capable: bool, model_fields: set) -> list[tuple[str, list, str]]:
    """[(name, overrides, why it cannot run or "")] for this machine: whether Transformer Engine
    imports (with CUDA), whether the GPU runs FP8, and which `model.*` keys this megacode has."""
    backend = "attention_backend" in model_fields
    auto = ["model.attention_backend=auto"] if backend else []
    no_te = "" if te_present else "Transformer Engine does not import here (pip install .[gpu])"
    out = [("bf16 te", auto + ["model.fp8=false"], no_te)]
    if backend:
        out.append(("bf16 sdpa", ["model.attention_backend=sdpa", "model.fp8=false"], ""))
    elif not te_present:  # the local spec is what auto builds; its attention is Megatron's unfused one
        out.append(("bf16 local", ["model.fp8=false"], ""))
    else:
        out.append(("bf16 sdpa", [], "this megacode has no model.attention_backend to force the local spec"))
    fp8_why = no_te or ("" if fp8_capable else "FP8 needs compute capability 8.9 or later (Ada, Hopper)")
    out.append(("fp8 te", auto + ["model.fp8=true"], fp8_why))
    return out


def row_line(name: str, megacode_s: float, bare_s: float, seconds_note: str = "") -> str:
    from megacode.config import load_config, model_shape
    from megacode.training.metrics import flops_per_token, throughput

    cfg = load_config(CONFIG)
    flops = flops_per_token(model_shape(cfg), cfg.data.seq_length)
    speed = throughput(cfg.train.global_batch_tokens, megacode_s, 1, flops)
    mfu = f"{100 * speed.mfu:.1f}%" if speed.mfu is not None else "n/a"
    return (f"{name:10s} | step {megacode_s:.3f} s | {speed.tokens_per_s_per_gpu:,.0f} tokens/s/GPU | "
            f"{speed.tflops_per_gpu:.0f} model TFLOP/s/GPU | MFU {mfu} | bare step {bare_s:.3f} s | "
            f"megacode/bare {megacode_s / bare_s:.3f}{seconds_note}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=12, help="steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing")
    parser.add_argument("--budget-minutes", type=float, default=8.0, help="skip rows that would end after this")
    parser.add_argument("--cache-dir", type=Path, default=Path(os.path.expanduser("~/.cache/megacode/bench_train")))
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("SKIP: no CUDA device; the GPU check needs a GPU (and Transformer Engine for the TE and FP8 rows)")
        return 0
    if args.iters <= args.warmup + 1:
        parser.error(f"--iters {args.iters} leaves no timed step after --warmup {args.warmup}")
    started = time.time()
    import dataclasses
    import importlib.metadata as metadata

    import bench_train

    from megacode.config.schema import ModelConfig
    from megacode.models.specs import te_available

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "absent"

    te = te_available()
    capability = ".".join(map(str, torch.cuda.get_device_capability()))
    print(f"device: {torch.cuda.get_device_name()} (capability {capability}) "
          f"| torch {torch.__version__} | megatron-core {version('megatron-core')} | "
          f"transformer-engine {version('transformer-engine') if te else 'not importable'}", flush=True)
    data = bench_train.ensure_data(args.cache_dir)
    work = Path(tempfile.mkdtemp(prefix="megacode-gpu-check-"))
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    plan = rows(te, torch.cuda.get_device_capability() >= (8, 9), fields)
    results, estimate = [], FIRST_ROW_ESTIMATE_S
    for name, overrides, why in plan:
        left = args.budget_minutes * 60 - (time.time() - started)
        if not why and estimate > left:
            why = f"time budget: about {estimate:.0f} s needed, {max(left, 0):.0f} s of --budget-minutes left"
        if why:
            results.append(f"SKIP {name}: {why}")
            print(results[-1], flush=True)
            continue
        row_start = time.time()
        label = name.replace(" ", "_")
        megacode_only = [f"logging.dir={work / (label + '_tb')}", "logging.interval=1"]
        both = overrides + bench_train.data_overrides(data) + [f"train.iters={args.iters}"]
        comparison = bench_train.compare(CONFIG, both, megacode_only, 1, 1, args.warmup, work, label)
        estimate = time.time() - row_start
        results.append(row_line(name, bench_train.median_step(comparison.megacode),
                                bench_train.median_step(comparison.bare), f" | {estimate:.0f} s"))
        print(results[-1], flush=True)
    print(f"\nGPU check ({time.time() - started:.0f} s, runs in {work}):")
    print("\n".join(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

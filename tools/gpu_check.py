"""GPU check: a few steps of a 7B-shaped Llama (4 layers) in BF16 and FP8 on one GPU.

    python tools/gpu_check.py [--iters 12] [--skip-fp8]

Prints tokens/s per GPU, model TFLOP/s per GPU and MFU (DESIGN.md §5) for each precision.
Without CUDA it prints a SKIP line and exits 0; FP8 needs Transformer Engine on Hopper or later.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "gpu" / "check_7b.yaml"


def run_precision(fp8: bool, iters: int) -> dict:
    history = Path(tempfile.mkdtemp(prefix="megacode-gpucheck-")) / "history.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", "--master-port", "29533",
               "-m", "megacode.train", "--config", str(CONFIG), "--history-json", str(history),
               f"train.iters={iters}", f"model.fp8={str(fp8).lower()}"]
    subprocess.run(command, cwd=REPO, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    steps = json.loads(history.read_text())
    return {"steps": steps}


def summarize(name: str, steps: list[dict]) -> str:
    from megacode.config import load_config, model_shape
    from megacode.training.metrics import flops_per_token, throughput

    cfg = load_config(CONFIG)
    flops = flops_per_token(model_shape(cfg), cfg.data.seq_length)
    warm = [s["seconds"] for s in steps[2:]] or [s["seconds"] for s in steps]
    seconds = statistics.median(warm)
    speed = throughput(cfg.train.global_batch_tokens, seconds, 1, flops)
    mfu = f"{100 * speed.mfu:.1f}%" if speed.mfu is not None else "n/a"
    return (f"{name:5s} step {seconds:.3f} s | {speed.tokens_per_s_per_gpu:,.0f} tokens/s/GPU | "
            f"{speed.tflops_per_gpu:.0f} model TFLOP/s/GPU | MFU {mfu} | final loss {steps[-1]['loss']:.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--skip-fp8", action="store_true")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("SKIP: no CUDA device; the GPU check needs a GPU (and Transformer Engine for FP8)")
        return 0
    import importlib.util

    have_te = importlib.util.find_spec("transformer_engine") is not None
    print(f"device: {torch.cuda.get_device_name()} | Transformer Engine: {'yes' if have_te else 'no'}")
    print(summarize("bf16", run_precision(False, args.iters)["steps"]))
    if args.skip_fp8:
        return 0
    if not have_te or torch.cuda.get_device_capability() < (8, 9):
        print("SKIP fp8: needs Transformer Engine and an FP8-capable GPU (Hopper/Ada or later)")
        return 0
    print(summarize("fp8", run_precision(True, args.iters)["steps"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loader throughput: samples/s of StepLoader with DALI and plain-Python collation at 0/1/2 threads,
and the same reads sample by sample (`dataset[i]`, the baseline the C++ `read_batch` gather replaces).

    .venv/bin/python -m megacode.data.loader_bench [--tokens 20e6] [--seq 4096] [--steps 16] [--repeats 3]

Data: three indexed datasets of random documents (lengths ~ lognormal, mean ~1,500 tokens,
uint16, written to a temporary directory, so warm in the page cache) blended 0.85/0.08/0.07 as
in Code Llama stage 1, packed at `--seq`. Each configuration reads `--steps` global batches of
`--gbs` sequences in micro-batches of `--mbs` (one DP rank holds the whole batch) through
`StepLoader.get`, back to back: the figure is how fast the loader can produce, with nothing to
overlap. The `overlap` row adds `--compute-ms` of sleep per step (a stand-in for the step) and
reports how long the loop still waited for data per step. Best of `--repeats`, configurations
alternating; batches of every configuration are checked equal to the first one's.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import numpy as np
import torch

from megacode.config import Layout
from megacode.data.blend import BlendedDataset
from megacode.data.gpt_dataset import PackedDataset
from megacode.data.indexed import IndexedDatasetWriter
from megacode.data.loader import StepLoader


def make_blend(root: str, tokens: int, seq: int, num_samples: int, seed: int = 0) -> BlendedDataset:
    rng = np.random.default_rng(seed)
    weights = [0.85, 0.08, 0.07]
    parts = []
    for k, w in enumerate(weights):
        total = max(int(tokens * w), 4 * seq)
        lens = np.clip(rng.lognormal(6.9, 1.0, total // 500 + 1).astype(np.int64), 1, 60_000)
        lens = lens[: int(np.searchsorted(np.cumsum(lens), total)) + 1]
        prefix = f"{root}/part{k}"
        with IndexedDatasetWriter(prefix, np.uint16) as writer:
            writer.add_documents(rng.integers(0, 32000, int(lens.sum()), dtype=np.uint16), lens)
        count = int(np.ceil(num_samples * w)) + 1
        parts.append(PackedDataset(prefix, np.arange(len(lens)), seq, count, seed + k, f"{root}/cache"))
    return BlendedDataset(parts, weights, num_samples, seed, f"{root}/cache")


class PerSample:
    """A dataset's samples without its `read_batch`: the loader then reads dataset[i] one by one."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[i]


def timed_pass(loader: StepLoader, gbs: int, steps: int, compute_s: float) -> tuple:
    """(seconds, loop's data wait per step, first step's batches) for `steps` back-to-back steps."""
    wait = 0.0
    start = time.perf_counter()
    first = None
    for step in range(steps):
        t = time.perf_counter()
        batches = loader.get(step * gbs)
        wait += time.perf_counter() - t
        first = first or batches
        if compute_s:
            time.sleep(compute_s)
    return time.perf_counter() - start, wait / steps, first


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=float, default=20e6)
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--gbs", type=int, default=64)
    p.add_argument("--mbs", type=int, default=4)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compute-ms", type=float, default=100.0)
    args = p.parse_args(argv)
    layout = Layout(world_size=1, tp=1, pp=1, vp=None, dp=1, num_layers=1, global_batch_size=args.gbs,
                    micro_batch_size=args.mbs, num_microbatches=args.gbs // args.mbs)
    root = tempfile.mkdtemp(prefix="loader-bench-")
    try:
        print(f"writing {args.tokens / 1e6:.0f}M tokens of test data under {root} ...", flush=True)
        blend = make_blend(root, int(args.tokens), args.seq, args.steps * args.gbs)
        configs = [(b, w) for b in ("python", "dali", "per-sample") for w in (0, 1, 2)]
        loaders = {c: StepLoader(PerSample(blend) if c[0] == "per-sample" else blend, layout,
                                 backend="python" if c[0] == "per-sample" else c[0], num_workers=c[1]) for c in configs}
        best = {c: float("inf") for c in configs}
        reference = None
        for r in range(args.repeats):
            for c in configs:
                seconds, _, first = timed_pass(loaders[c], args.gbs, args.steps, 0.0)
                best[c] = min(best[c], seconds)
                reference = reference or first
                assert all(torch.equal(a[k], b[k]) for a, b in zip(first, reference) for k in a), c
            print(f"  round {r + 1}/{args.repeats} done", flush=True)
        samples = args.steps * args.gbs
        print(f"\nloader throughput, seq {args.seq}, micro-batch {args.mbs}, {args.gbs} samples per step "
              f"(best of {args.repeats}, {samples} samples each):")
        for (backend, workers), seconds in best.items():
            mode = "synchronous" if workers == 0 else f"{workers} thread{'s' * (workers > 1)} + prefetch"
            print(f"  {backend:10s} {mode:22s} {samples / seconds:9.0f} samples/s  "
                  f"{samples * args.seq / seconds / 1e6:7.1f}M tokens/s")
        for workers in (0, 1, 2):
            print(f"  read_batch gather vs per-sample reads, {workers} workers (python collate): "
                  f"{best[('per-sample', workers)] / best[('python', workers)]:.2f}x")
        print(f"\noverlap with a {args.compute_ms:.0f} ms step (sleep), loop's wait for data per step:")
        for c in configs:
            loaders[c].stats.update(prefetched=0)
            _, wait, _ = timed_pass(loaders[c], args.gbs, args.steps, args.compute_ms / 1000)
            print(f"  {c[0]:10s} {c[1]} workers: {wait * 1e3:7.2f} ms")
        for loader in loaders.values():
            loader.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Index build times, megacode against Megatron-Core, on the same inputs in one run.

    .venv/bin/python tools/bench_indices.py [--docs 10000000] [--seq-length 4096] [--epochs 2]

Rows:
  sample index   megacode.data.indices.build_sample_index vs megatron.core.datasets.helpers
                 .build_sample_idx (both public wrappers, and their bare C++ cores), outputs
                 checked equal;
  blend index    build_blend_index vs helpers_cpp.build_blending_indices (Code Llama's 3 weights);
  document order build_document_order (per-epoch Fisher-Yates in C++) vs what GPTDataset does
                 (NumPy RandomState.shuffle over the concatenated epochs).
Each figure is the best of --repeats runs, ours and theirs alternating. Megatron-Core's
helpers_cpp ships compiled in the pip wheel; if it does not import, helpers.cpp is compiled
into a temporary directory here (never into the source tree). tools/bench_data.py may import
`bench_sample_index` for its table.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from typing import Callable, Dict

import numpy as np

from megacode import _indices
from megacode.data import indices


def megatron_helpers():
    """Megatron-Core's compiled helpers module, building helpers.cpp into a temp dir if needed."""
    try:
        from megatron.core.datasets import helpers_cpp
        return helpers_cpp
    except ImportError:
        pass
    import megatron.core.datasets as mds
    import pybind11
    src = os.path.join(os.path.dirname(mds.__file__), "helpers.cpp")
    out_dir = tempfile.mkdtemp(prefix="megatron-helpers-")
    out = os.path.join(out_dir, "helpers_cpp" + sysconfig.get_config_var("EXT_SUFFIX"))
    cmd = ["g++", "-O3", "-shared", "-std=c++17", "-fPIC", f"-I{pybind11.get_include()}",
           f"-I{sysconfig.get_paths()['include']}", src, "-o", out]
    subprocess.run(cmd, check=True)
    spec = importlib.util.spec_from_file_location("helpers_cpp", glob.glob(out)[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _best(fns: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    times = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name] = min(times[name], time.perf_counter() - start)
    return times


def make_inputs(num_docs: int, epochs: int, seed: int = 0):
    """Document sizes with a long tail like source files (median about 600 tokens) and a
    shuffled multi-epoch document order, int32 as GPTDataset passes them."""
    rng = np.random.default_rng(seed)
    sizes = np.clip(rng.lognormal(6.4, 1.2, num_docs), 1, 200_000).astype(np.int32)
    order = np.concatenate([rng.permutation(num_docs) for _ in range(epochs)]).astype(np.int32)
    return sizes, order


def bench_sample_index(num_docs: int = 10_000_000, seq_length: int = 4096, epochs: int = 2,
                       repeats: int = 3) -> Dict[str, float]:
    """Seconds to build the sample index, ours vs Megatron-Core, plus the sample count."""
    helpers_cpp = megatron_helpers()
    from megatron.core.datasets import helpers as megatron_wrapper
    sizes, order = make_inputs(num_docs, epochs)
    tokens_per_epoch = int(sizes.sum(dtype=np.int64))
    num_samples = (epochs * tokens_per_epoch - 1) // seq_length
    ours = indices.build_sample_index(sizes, order, seq_length, num_samples)
    theirs = helpers_cpp.build_sample_idx_int32(sizes, order, seq_length, epochs, tokens_per_epoch, True, 1)
    if not np.array_equal(ours, theirs):
        raise AssertionError("sample indices differ from Megatron-Core's")
    del ours, theirs
    times = _best({
        "ours": lambda: indices.build_sample_index(sizes, order, seq_length, num_samples),
        "megatron": lambda: megatron_wrapper.build_sample_idx(sizes, order, seq_length, epochs, tokens_per_epoch,
                                                              True, True),
        "ours_core": lambda: _indices.build_sample_index_int32(sizes, order, seq_length, num_samples),
        "megatron_core": lambda: helpers_cpp.build_sample_idx_int32(sizes, order, seq_length, epochs,
                                                                   tokens_per_epoch, True, 1),
    }, repeats)
    return {**times, "num_samples": num_samples, "tokens": epochs * tokens_per_epoch}


def bench_blend_index(num_samples: int, repeats: int = 3) -> Dict[str, float]:
    helpers_cpp = megatron_helpers()
    weights = np.array([0.85, 0.08, 0.07])

    def theirs():
        dataset_index = np.zeros(num_samples, dtype=np.int16)
        dataset_sample_index = np.zeros(num_samples, dtype=np.int64)
        helpers_cpp.build_blending_indices(dataset_index, dataset_sample_index, weights, 3, num_samples, False)

    return _best({"ours": lambda: indices.build_blend_index(weights, num_samples), "megatron": theirs}, repeats)


def bench_document_order(num_docs: int, epochs: int, repeats: int = 3) -> Dict[str, float]:
    docs = np.arange(num_docs, dtype=np.int64)

    def theirs():  # GPTDataset._build_document_index without a separate final epoch
        index = np.tile(np.arange(num_docs, dtype=np.int32), epochs)
        np.random.RandomState(1234).shuffle(index)

    return _best({"ours": lambda: indices.build_document_order(docs, epochs, 1234), "megatron": theirs}, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=10_000_000)
    parser.add_argument("--seq-length", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    s = bench_sample_index(args.docs, args.seq_length, args.epochs, args.repeats)
    b = bench_blend_index(int(s["num_samples"]), args.repeats)
    d = bench_document_order(args.docs, args.epochs, args.repeats)
    print(f"inputs: {args.docs:,} documents x {args.epochs} epochs, {s['tokens']:,} tokens, seq_length "
          f"{args.seq_length}, {s['num_samples']:,} samples; best of {args.repeats}")
    print(f"{'index':<26}{'megacode s':>12}{'Megatron-Core s':>17}{'Megatron/ours':>15}")
    rows = [("sample index (wrapper)", s["ours"], s["megatron"]),
            ("sample index (C++ core)", s["ours_core"], s["megatron_core"]),
            ("blend index (3 datasets)", b["ours"], b["megatron"]),
            ("document order", d["ours"], d["megatron"])]
    for name, ours, theirs in rows:
        print(f"{name:<26}{ours:>12.3f}{theirs:>17.3f}{theirs / ours:>14.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

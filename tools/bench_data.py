#!/usr/bin/env python
"""Data-path throughput, megacode against the PyPI sentencepiece binding and a Megatron-LM-style
baseline, side by side in one run on the same corpus and tokenizer.

    .venv/bin/python tools/bench_data.py [--tokenizer-model M] [--workers 1 2] [--repeats 3] [--cores]

Corpus: the Python standard library's .py sources (about 31 MB, one JSONL line per file).
Tokenizer: a 32k Llama 2-style BPE model trained on that corpus once and cached (or --tokenizer-model).
Rows (tokens include the EOS that --append-eod adds):
  raw encode     sentencepiece binding, encode(list, num_threads=1): the single-core reference
  megatron-style Megatron-LM's tools/preprocess_data.py recipe: multiprocessing.Pool(N).imap over
                 lines (chunksize 32), json.loads + binding encode + EOS in the workers, Megatron-
                 Core's IndexedDatasetBuilder in the main process
  megacode       megacode.data.preprocess (tools/preprocess_data.py) with --workers N
  --cores        single-thread C++ cores on the same documents: Debian's libsentencepiece (when
                 libsentencepiece-dev is installed) and ours with and without the word cache
                 (csrc/bench/spm_core_bench.cpp, compiled into a temporary directory)
Every figure is the best of --repeats runs, the configurations alternating (this machine is
shared, so the best run is the least disturbed one); the median is printed beside it. A control
row (a CPU-bound Python loop in 1 and N processes, timed in the same rounds) shows how much
parallelism the machine offered meanwhile. Outputs of megacode and the baseline are checked
byte for byte before timing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

import sentencepiece as spm  # noqa: E402

from megacode.data.preprocess import PreprocessConfig, preprocess  # noqa: E402
from megacode.tokenizer.train import cached_llama_like  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# Corpus and tokenizer --------------------------------------------------------------------------

def stdlib_corpus(cache_dir: Path, max_mb: float) -> tuple:
    """(jsonl path, texts): stdlib .py files that decode as UTF-8, sorted, up to max_mb."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    texts, total = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            try:
                text = (Path(dirpath) / name).read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if not text or total + len(text) > max_mb * 1e6:
                continue
            texts.append(text)
            total += len(text)
    path = cache_dir / f"stdlib-{len(texts)}-{total}.jsonl"
    if not path.exists():
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            for text in texts:
                f.write(json.dumps({"text": text}) + "\n")
        os.replace(tmp, path)
    return path, texts


def bench_tokenizer(cache_dir: Path, texts: List[str]) -> Path:
    lines = [ln for t in texts for ln in t.splitlines() if ln.strip()]
    return cached_llama_like(lines, 32000, cache_dir, tag="bench-bpe")


# The Megatron-LM-style baseline (its preprocess_data.py recipe, for a SentencePiece model) -------

class _MegatronEncoder:
    model_path = ""

    @staticmethod
    def initializer(model_path: str) -> None:
        _MegatronEncoder.sp = spm.SentencePieceProcessor(model_file=model_path)

    @staticmethod
    def encode(json_line: str):
        ids = _MegatronEncoder.sp.encode(json.loads(json_line)["text"])
        if ids:
            ids.append(_MegatronEncoder.sp.eos_id())
        return ids, len(json_line)


def megatron_style(jsonl: Path, model: Path, prefix: Path, workers: int) -> int:
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    vocab = spm.SentencePieceProcessor(model_file=str(model)).vocab_size()
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=DType.optimal_dtype(vocab))
    tokens = 0
    with open(jsonl, encoding="utf-8") as fin, \
            mp.get_context("fork").Pool(workers, _MegatronEncoder.initializer, (str(model),)) as pool:
        for ids, _ in pool.imap(_MegatronEncoder.encode, fin, 32):
            builder.add_document(ids, [len(ids)])
            tokens += len(ids)
    builder.finalize(f"{prefix}.idx")
    return tokens


def megacode_run(jsonl: Path, model: Path, prefix: Path, workers: int) -> int:
    cfg = PreprocessConfig(inputs=[str(jsonl)], output_prefix=str(prefix), tokenizer_model=str(model),
                           append_eod=True, workers=workers, progress=False)
    return preprocess(cfg).tokens


# Machine control: how much a second process can get on this machine right now --------------------

def _burn(n: int) -> int:
    s = 0
    for i in range(n):
        s += i
    return n


def control(processes: int, n: int = 3_000_000) -> int:
    """CPU-bound pure-Python work, `processes` times in parallel; returns units of work done."""
    if processes == 1:
        return _burn(n)
    with mp.get_context("fork").Pool(processes) as pool:
        return sum(pool.map(_burn, [n] * processes))


# Timing -----------------------------------------------------------------------------------------

def alternate(fns: Dict[str, Callable[[], int]], repeats: int) -> Dict[str, dict]:
    """Run each fn `repeats` times, alternating; {name: {tokens, best_s, median_s}}."""
    times: Dict[str, list] = {name: [] for name in fns}
    tokens: Dict[str, int] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            tokens[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {n: {"tokens": tokens[n], "best_s": min(t), "median_s": statistics.median(t)} for n, t in times.items()}


def core_rows(model: Path, texts: List[str], workdir: Path, repeats: int) -> Dict[str, dict]:
    """Single-thread C++ cores, compiled here; their id checksums must agree."""
    corpus = workdir / "corpus.bin"
    corpus.write_bytes(b"\0".join(t.encode("utf-8") for t in texts))
    src = ROOT / "csrc" / "bench" / "spm_core_bench.cpp"
    builds = {"ours (C++, word cache)": ([], []), "ours (C++, no cache)": ([], ["nocache"])}
    if Path("/usr/include/sentencepiece_processor.h").exists():
        builds["Debian libsentencepiece (C++)"] = (["-DWITH_LIBSENTENCEPIECE", "-lsentencepiece"], [])
    else:
        print("(Debian libsentencepiece-dev not installed: apt-get install libsentencepiece-dev for its row)")
    rows, sums = {}, set()
    for name, (flags, extra) in builds.items():
        exe = workdir / ("bench" + str(len(rows)))
        cmd = ["g++", "-O3", "-std=c++17", str(src), "-o", str(exe)]
        subprocess.run(cmd[:4] + cmd[4:] + [f for f in flags if f.startswith("-D")] +
                       [f for f in flags if f.startswith("-l")], check=True)
        best = float("inf")
        for _ in range(repeats):
            out = subprocess.run([str(exe), str(model), str(corpus)] + extra, check=True,
                                 capture_output=True, text=True).stdout.split()
            best = min(best, float(out[1]))
            sums.add(out[2])
        rows[name] = {"tokens": int(out[0]), "best_s": best, "median_s": best}
    if len(sums) != 1:
        raise AssertionError(f"C++ cores disagree on the ids: checksums {sums}")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer-model", default=None, help="default: a 32k BPE trained on the corpus (cached)")
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/megacode/bench"))
    p.add_argument("--max-mb", type=float, default=1000.0, help="corpus size cap")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cores", action="store_true", help="also time the single-thread C++ cores")
    p.add_argument("--with-indices", action="store_true", help="also the sample-index row (tools/bench_indices.py)")
    args = p.parse_args()

    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    jsonl, texts = stdlib_corpus(cache, args.max_mb)
    model = Path(args.tokenizer_model) if args.tokenizer_model else bench_tokenizer(cache, texts)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"corpus: {len(texts):,} stdlib files, {mb:.1f} MB ({jsonl}); tokenizer: {model} "
          f"({sp.vocab_size():,} pieces); {os.cpu_count()} cores; best of {args.repeats}")

    work = Path(tempfile.mkdtemp(prefix="bench_data-"))
    try:
        # Same bytes first: the comparison is only fair between identical outputs.
        megatron_style(jsonl, model, work / "check_megatron", 1)
        megacode_run(jsonl, model, work / "check", 1)
        for ext in (".bin", ".idx"):
            if (work / f"check_megatron{ext}").read_bytes() != (work / f"check_text_document{ext}").read_bytes():
                raise AssertionError(f"megacode's {ext} differs from the Megatron-style baseline's")
        fns: Dict[str, Callable[[], int]] = {
            "raw encode (binding, 1 thread)": lambda: sum(map(len, sp.encode(texts, num_threads=1))) + len(texts),
        }
        for w in args.workers:
            fns[f"megatron-style, {w} workers"] = lambda w=w: megatron_style(jsonl, model, work / f"m{w}", w)
            fns[f"megacode, {w} workers"] = lambda w=w: megacode_run(jsonl, model, work / f"o{w}", w)
            fns[f"control, {w} workers"] = lambda w=w: control(w)
        rows = alternate(fns, args.repeats)
        controls = {n: rows.pop(n) for n in [k for k in rows if k.startswith("control")]}
        if args.cores:
            rows.update(core_rows(model, texts, work, args.repeats))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    raw = rows["raw encode (binding, 1 thread)"]
    raw_rate = raw["tokens"] / raw["best_s"]
    print(f"\n{'':34s} {'tokens/s (best)':>16s} {'(median)':>12s} {'per core':>12s} {'vs raw 1-thread':>16s}")
    for name, r in rows.items():
        rate, med = r["tokens"] / r["best_s"], r["tokens"] / r["median_s"]
        cores = int(name.split(", ")[1].split()[0]) if "workers" in name else 1
        print(f"{name:34s} {rate:16,.0f} {med:12,.0f} {rate / cores:12,.0f} {rate / cores / raw_rate:15.2f}x")
    print()
    for w in args.workers:
        ours, theirs = rows[f"megacode, {w} workers"], rows[f"megatron-style, {w} workers"]
        print(f"megacode vs megatron-style at {w} workers: {theirs['best_s'] / ours['best_s']:.2f}x faster end to end")
    if len(args.workers) > 1:
        lo, hi = min(args.workers), max(args.workers)

        def scaling(table, kind):  # throughput at hi workers / throughput at lo workers
            a, b = table[f"{kind}, {lo} workers"], table[f"{kind}, {hi} workers"]
            return (b["tokens"] / b["best_s"]) / (a["tokens"] / a["best_s"])

        for kind in ("megacode", "megatron-style"):
            print(f"{kind} scaling {lo} -> {hi} workers: {scaling(rows, kind):.2f}x")
        print(f"machine control (pure-Python CPU loop, {lo} -> {hi} processes, same moments): "
              f"{scaling(controls, 'control'):.2f}x  <- the most any program could scale here now")

    # ---- sample-index row (tools/bench_indices.py provides bench_sample_index) ----
    if args.with_indices:
        from bench_indices import bench_sample_index  # noqa: E402  (tools/ is on sys.path as the script dir)

        s = bench_sample_index(num_docs=1_000_000, repeats=args.repeats)
        print(f"sample index, {s['num_samples']:,} samples: megacode {s['ours']:.3f} s, "
              f"Megatron-Core {s['megatron']:.3f} s ({s['megatron'] / s['ours']:.2f}x)")
    # ---- FIM row: to be added with the FIM transform (issue 3, FIM part) ----


if __name__ == "__main__":
    main()

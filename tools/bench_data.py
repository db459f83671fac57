#!/usr/bin/env python
"""Data-path throughput, megacode against the PyPI sentencepiece binding and a Megatron-LM-style
baseline, side by side in one run on the same corpus and tokenizer.

    .venv/bin/python tools/bench_data.py [--tokenizer-model M] [--workers 1 2] [--repeats 3] [--cores]

Corpus: the Python standard library's .py sources (about 31 MB, one JSONL line per file), or with
--corpus installed also this environment's packages (about 220 MB; tools/bench_corpus.py).
Tokenizer: a 32k Llama 2-style BPE model trained on the stdlib once and cached (or --tokenizer-model).
Rows (tokens include the EOS that --append-eod adds):
  raw encode     sentencepiece binding, encode(list, num_threads=1): the single-core reference
  megatron-style Megatron-LM's tools/preprocess_data.py recipe: multiprocessing.Pool(N).imap over
                 lines (chunksize 32), json.loads + binding encode + EOS in the workers, Megatron-
                 Core's IndexedDatasetBuilder in the main process
  megacode       megacode.data.preprocess (what tools/preprocess_data.py runs) with --workers N
  control        a CPU-bound Python loop in 1 and N processes: how much parallelism the (shared)
                 machine offered during the same rounds
  --cores        single-thread C++ cores on the same documents: Debian's libsentencepiece (when
                 libsentencepiece-dev is installed) and ours with and without the word cache
                 (csrc/bench/spm_core_bench.cpp, compiled into a temporary directory)
Each measurement runs in a fresh Python process (no state shared between rows) that times only
its own work: wall seconds and the CPU seconds of all its processes. Figures are the best of
--repeats rounds, rows alternating (the best run is the least disturbed one); medians beside.
CPU seconds hardly depend on other load, so cpu(1 worker) / cpu(N workers) x N bounds the
scaling on N free cores. megacode's and the baseline's outputs are compared byte for byte first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_corpus import python_sources  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RAW, MEGATRON, MEGACODE, CONTROL = "raw encode (binding, 1 thread)", "megatron-style", "megacode", "control"


# Corpus and tokenizer --------------------------------------------------------------------------

def write_jsonl(texts: List[str], path: Path) -> Path:
    if not path.exists():
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            for text in texts:
                f.write(json.dumps({"text": text}) + "\n")
        os.replace(tmp, path)
    return path


def bench_tokenizer(cache_dir: Path, texts: List[str]) -> Path:
    from megacode.tokenizer.train import cached_llama_like

    lines = [ln for t in texts for ln in t.splitlines() if ln.strip()]
    return cached_llama_like(lines, 32000, cache_dir, tag="bench-bpe")


# One measurement, in a child process ------------------------------------------------------------

def _cpu_seconds() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


class _MegatronEncoder:  # Megatron-LM's Encoder, for a SentencePiece model with --append-eod
    @staticmethod
    def initializer(model_path: str) -> None:
        import sentencepiece as spm

        _MegatronEncoder.sp = spm.SentencePieceProcessor(model_file=model_path)

    @staticmethod
    def encode(json_line: str):
        ids = _MegatronEncoder.sp.encode(json.loads(json_line)["text"])
        if ids:
            ids.append(_MegatronEncoder.sp.eos_id())
        return ids, len(json_line)


def _burn(n: int) -> int:
    s = 0
    for i in range(n):
        s += i
    return n


def child(kind: str, workers: int, jsonl: str, model: str, out: str) -> dict:
    """Run one measurement here; imports and setup happen before the clock starts."""
    import multiprocessing as mp

    import sentencepiece as spm

    if kind == RAW:
        sp = spm.SentencePieceProcessor(model_file=model)
        with open(jsonl, encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f]
        work = lambda: sum(map(len, sp.encode(texts, num_threads=1))) + len(texts)  # noqa: E731
    elif kind == MEGATRON:
        from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

        def work():
            vocab = spm.SentencePieceProcessor(model_file=model).vocab_size()
            builder = IndexedDatasetBuilder(f"{out}.bin", dtype=DType.optimal_dtype(vocab))
            tokens = 0
            with open(jsonl, encoding="utf-8") as fin, \
                    mp.get_context("fork").Pool(workers, _MegatronEncoder.initializer, (model,)) as pool:
                for ids, _ in pool.imap(_MegatronEncoder.encode, fin, 32):
                    builder.add_document(ids, [len(ids)])
                    tokens += len(ids)
            builder.finalize(f"{out}.idx")
            return tokens
    elif kind == MEGACODE:
        from megacode.data.preprocess import PreprocessConfig, preprocess

        cfg = PreprocessConfig(inputs=[jsonl], output_prefix=out, tokenizer_model=model, append_eod=True,
                               workers=workers, progress=False)
        work = lambda: preprocess(cfg).tokens  # noqa: E731
    elif kind == CONTROL:
        def work():
            if workers == 1:
                return _burn(3_000_000)
            with mp.get_context("fork").Pool(workers) as pool:
                return sum(pool.map(_burn, [3_000_000] * workers))
    else:
        raise ValueError(kind)
    start, cpu0 = time.perf_counter(), _cpu_seconds()
    tokens = work()
    return {"tokens": tokens, "wall_s": time.perf_counter() - start, "cpu_s": _cpu_seconds() - cpu0}


def measure(kind: str, workers: int, jsonl: Path, model: Path, out: Path) -> dict:
    for old in out.parent.glob(out.name + "*"):  # every row writes new files (no unlinking on the clock)
        old.unlink()
    # numpy's OpenBLAS would start a thread that spins for about 0.1 s after import, taking a core
    # from whichever row starts next; no row uses BLAS, so every child runs without that pool.
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-W", "ignore", __file__, "--child", kind, str(workers), str(jsonl),
                           str(model), str(out)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind}, {workers} workers failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def core_rows(model: Path, texts: List[str], jsonl: Path, workdir: Path, repeats: int) -> Dict[str, dict]:
    """Single-thread cores on the same documents, alternating with the binding's raw encode so the
    ratios compare like moments; the C++ cores' id checksums must agree."""
    corpus = workdir / "corpus.bin"
    corpus.write_bytes(b"\0".join(t.encode("utf-8") for t in texts))
    src = ROOT / "csrc" / "bench" / "spm_core_bench.cpp"
    builds = {"ours (C++, word cache)": ([], ""), "ours (C++, no cache)": ([], "nocache")}
    if Path("/usr/include/sentencepiece_processor.h").exists():
        builds["Debian libsentencepiece 0.1.97 (C++)"] = (["-DWITH_LIBSENTENCEPIECE", "-lsentencepiece"], "")
    else:
        print("(no Debian libsentencepiece-dev: apt-get install libsentencepiece-dev for its row)")
    exes = {}
    for name, (flags, _) in builds.items():
        exes[name] = workdir / f"core{len(exes)}"
        subprocess.run(["g++", "-O3", "-std=c++17", str(src), "-o", str(exes[name])] + flags, check=True)
    rows: Dict[str, dict] = {"PyPI sentencepiece 0.2.3 (Python)": {"tokens": 0, "wall_s": []}}
    sums = set()
    for _ in range(repeats):
        r = measure(RAW, 1, jsonl, model, workdir / "raw")
        row = next(iter(rows.values()))
        row["tokens"] = r["tokens"] - len(texts)  # no EOS here: the C++ cores encode the texts only
        row["wall_s"].append(r["wall_s"])
        for name, (_, mode) in builds.items():
            out = subprocess.run([str(exes[name]), str(model), str(corpus)] + ([mode] if mode else []), check=True,
                                 capture_output=True, text=True).stdout.split()
            rows.setdefault(name, {"tokens": int(out[0]), "wall_s": []})["wall_s"].append(float(out[1]))
            sums.add(out[2])
    if len(sums) != 1:
        raise AssertionError(f"C++ cores disagree on the ids: checksums {sums}")
    return rows


# Report -------------------------------------------------------------------------------------------

def rate(r, f=min):
    return r["tokens"] / f(r["wall_s"])


def report_cores(rows: Dict[str, dict]) -> None:
    base = rate(next(iter(rows.values())))
    print(f"\nsingle-thread cores (same rounds){'':5s} {'tokens/s best':>14s} {'median':>12s} {'vs binding':>11s}")
    for name, r in rows.items():
        print(f"{name:37s} {rate(r):14,.0f} {rate(r, statistics.median):12,.0f} {rate(r) / base:10.2f}x")


def report(rows: Dict[str, dict], workers: List[int]) -> None:

    raw_rate = rate(rows[RAW])
    print(f"\n{'':32s} {'tokens/s best':>14s} {'median':>12s} {'per core':>12s} {'vs raw':>8s} {'CPU s':>7s}")
    for name, r in rows.items():
        if name.startswith(CONTROL):
            continue
        cores = int(name.rsplit(", ", 1)[1].split()[0]) if name.endswith(" workers") else 1
        cpu = f"{min(r['cpu_s']):7.2f}" if "cpu_s" in r else "      -"
        print(f"{name:32s} {rate(r):14,.0f} {rate(r, statistics.median):12,.0f} {rate(r) / cores:12,.0f} "
              f"{rate(r) / cores / raw_rate:7.2f}x {cpu}")
    print()
    for w in workers:
        ours, theirs = rows[f"{MEGACODE}, {w} workers"], rows[f"{MEGATRON}, {w} workers"]
        print(f"megacode vs megatron-style, {w} workers: {rate(ours) / rate(theirs):.2f}x faster end to end")
    lo = min(workers)
    for hi in sorted(set(workers) - {lo}):
        for kind in (MEGACODE, MEGATRON, CONTROL):
            a, b = rows[f"{kind}, {lo} workers"], rows[f"{kind}, {hi} workers"]
            bound = hi / lo * (min(a["cpu_s"]) / a["tokens"]) / (min(b["cpu_s"]) / b["tokens"])  # per unit of work
            print(f"{kind} {lo} -> {hi} workers: {rate(b) / rate(a):.2f}x wall clock, {bound:.2f}x by CPU seconds "
                  f"({min(a['cpu_s']):.2f} -> {min(b['cpu_s']):.2f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer-model", default=None, help="default: a 32k BPE trained on the corpus (cached)")
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/megacode/bench"))
    p.add_argument("--corpus", choices=["stdlib", "installed"], default="stdlib",
                   help="stdlib: the standard library's .py files (~31 MB); installed: plus this environment's "
                   "packages (~220 MB, where fixed start-up costs no longer count)")
    p.add_argument("--max-mb", type=float, default=None, help="benchmark only the first files, up to this size")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cores", action="store_true", help="also time the single-thread C++ cores")
    p.add_argument("--with-indices", action="store_true", help="also the sample-index row (tools/bench_indices.py)")
    p.add_argument("--with-loader", action="store_true",
                   help="also the loader rows: samples/s at 1 and 2 threads, DALI and plain (megacode/data/loader_bench.py)")
    p.add_argument("--child", nargs=5, metavar=("KIND", "WORKERS", "JSONL", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, w, jsonl, model, out = args.child
        print(json.dumps(child(kind, int(w), jsonl, model, out)))
        return

    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    stdlib = [t for t in python_sources() if t]
    model = Path(args.tokenizer_model) if args.tokenizer_model else bench_tokenizer(cache, stdlib)
    texts = [t for t in python_sources(installed=True) if t] if args.corpus == "installed" else stdlib
    if args.max_mb is not None:
        keep, total = [], 0
        for t in texts:
            if total + len(t) > args.max_mb * 1e6:
                break
            keep.append(t)
            total += len(t)
        texts = keep
    jsonl = write_jsonl(texts, cache / f"{args.corpus}-{len(texts)}-{sum(map(len, texts))}.jsonl")
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"corpus: {len(texts):,} {args.corpus} .py files, {mb:.1f} MB ({jsonl}); tokenizer {model}; "
          f"{os.cpu_count()} cores; best of {args.repeats}")

    work = Path(tempfile.mkdtemp(prefix="bench_data-"))
    try:
        measure(MEGATRON, 1, jsonl, model, work / "check_megatron")  # same bytes before any timing
        measure(MEGACODE, 1, jsonl, model, work / "check_megacode")
        for ext in (".bin", ".idx"):
            if (work / f"check_megatron{ext}").read_bytes() != (work / f"check_megacode_text_document{ext}").read_bytes():
                raise AssertionError(f"megacode's {ext} differs from the Megatron-style baseline's")
        plan = [(RAW, 1)] + [(k, w) for w in args.workers for k in (MEGATRON, MEGACODE, CONTROL)]
        rows: Dict[str, dict] = {}
        for _ in range(args.repeats):
            for kind, w in plan:
                r = measure(kind, w, jsonl, model, work / f"{kind[:4]}{w}")
                row = rows.setdefault(kind if kind == RAW else f"{kind}, {w} workers",
                                      {"tokens": r["tokens"], "wall_s": [], "cpu_s": []})
                row["wall_s"].append(r["wall_s"])
                row["cpu_s"].append(r["cpu_s"])
        cores = core_rows(model, texts, jsonl, work, args.repeats) if args.cores else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(rows, args.workers)
    if cores:
        report_cores(cores)

    # ---- sample-index row: tools/bench_indices.py provides bench_sample_index ----
    if args.with_indices:
        sys.path.insert(0, str(ROOT / "tools"))
        from bench_indices import bench_sample_index

        s = bench_sample_index(num_docs=1_000_000, repeats=args.repeats)
        print(f"sample index, {s['num_samples']:,} samples: megacode {s['ours']:.3f} s, "
              f"Megatron-Core {s['megatron']:.3f} s ({s['megatron'] / s['ours']:.2f}x)")
    # ---- loader rows: megacode/data/loader_bench.py (StepLoader, DALI vs plain, 0/1/2 threads) ----
    if args.with_loader:
        from megacode.data import loader_bench

        loader_bench.main(["--repeats", str(args.repeats)])
    # ---- FIM row: to be added with the FIM transform (issue 3, FIM part) ----


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""FIM sample throughput: megacode's C++ transform against a Megatron-LM-style baseline and the
raw single-thread encode speed of the PyPI sentencepiece binding, side by side in one run.

    .venv/bin/python tools/bench_fim.py [--docs blocks|files] [--seq 4096] [--samples 300] [--repeats 3]

Corpus: the Python standard library's .py sources, one document per file (`files`, mean ~5.2k
tokens) or per top-level block (`blocks`: files cut at two blank lines, mean ~0.8k tokens, so
most documents fit whole in a 4096-token context, which is when FIM has work to do). Tokenizer:
the 32k Llama 2-style BPE trained on that corpus (the one tools/bench_data.py caches), extended
with Code Llama's 16 pieces, so <PRE>/<SUF>/<MID>/<EOT> are 32007..32010 as in Code Llama.
Documents end with EOS; packed at --seq; FIM rate 0.9, SPM 0.5.

Rows (each in a fresh Python process, timing only its own work; best of --repeats, rows alternating):
  raw encode      binding `encode(list, num_threads=1)` of the texts FIM re-encodes in the same
                  samples (the whole documents' decoded text): the limit, since FIM must re-encode
                  what it transforms
  megatron-style  Megatron-LM GPTFIMDataset's way: at __getitem__, detokenize each document of the
                  sample with the binding, cut the text, re-tokenize the parts in Python (same
                  choices as ours, so its samples are checked equal to ours first)
  megacode        FimDataset[i], one thread (C++: decode, layouts, exact BPE core, GIL released)
  threads N       FimDataset[i] on N Python threads (contiguous chunks of the samples)
  loader N        StepLoader over the FimDataset with N reader threads (plain collation), and the
                  same without FIM, samples/s
  control N       a CPU-bound Python loop in 1 and N processes: the parallelism the (shared)
                  machine offered during the same rounds
Figures: samples/s; tokens/s per core = tokens / CPU seconds of the process (sample tokens for
the FIM rows, encoded tokens for the raw row); `reencoded` = tokens of the transformed documents
written by the transform. tools/bench_data.py can take a FIM row from `fim_row(...)`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from bench_corpus import python_sources  # noqa: E402

RAW, MEGATRON, MEGACODE = "raw encode (binding, 1 thread)", "megatron-style", "megacode"


# Corpus, tokenizer, dataset -------------------------------------------------------------------

def stdlib_documents(kind: str) -> List[str]:
    """The stdlib's UTF-8 .py files in path order, whole (`files`) or cut at two blank lines (`blocks`)."""
    texts = python_sources()
    if kind == "blocks":
        texts = [b for t in texts for b in t.split("\n\n\n")]
    return [t for t in texts if t.strip()]


def codellama_model(cache: Path) -> Path:
    """The 32k stdlib BPE (cached like tools/bench_data.py's) with Code Llama's 16 pieces added."""
    from megacode.tokenizer.codellama import build_codellama_tokenizer
    from megacode.tokenizer.train import cached_llama_like

    base = cached_llama_like([ln for t in stdlib_documents("files") for ln in t.splitlines() if ln.strip()],
                             32000, cache, tag="bench-bpe")
    out = cache / f"{base.stem}-codellama.model"
    if not out.exists():
        build_codellama_tokenizer(base, out)
    return out


def build_fim_dataset(model: str, docs_kind: str, root: str, seq: int, samples: int):
    """FimDataset (rate 0.9, SPM 0.5) over the corpus; the indexed files are written once per root."""
    from megacode.data.fim_dataset import FimDataset
    from megacode.data.gpt_dataset import PackedDataset
    from megacode.data.indexed import IndexedDataset, IndexedDatasetWriter
    from megacode.tokenizer import load

    tok = load(model)
    prefix = os.path.join(root, f"stdlib-{docs_kind}")
    if not os.path.exists(prefix + ".idx"):
        flat, lengths = tok.encode_batch(stdlib_documents(docs_kind), eos=True, num_threads=os.cpu_count() or 1)
        with IndexedDatasetWriter(prefix, np.uint16) as w:
            w.add_documents(flat, lengths)
    n = len(IndexedDataset(prefix))
    packed = PackedDataset(prefix, np.arange(n), seq, samples, 1, os.path.join(root, "cache"))
    return FimDataset(packed, tok, 0.9, 0.5)


# The baseline: Megatron-LM GPTFIMDataset's approach, in Python at __getitem__ ------------------

_MASK, _G = (1 << 64) - 1, 0x9E3779B97F4A7C15


def _mix(z: int) -> int:
    z &= _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _draws(seed: int, sample: int, piece: int, doc: int) -> List[int]:
    """csrc/fim.cpp's choices (its header gives the formula), so both produce the same samples."""
    key = _mix(seed + _G) ^ sample
    key = _mix(key + _G) ^ piece
    key = _mix(key + _G) ^ doc
    return [_mix(key + (j + 1) * _G) for j in range(4)]


class MegatronStyleFim:
    """The FimDataset's samples made as Megatron-LM's GPTFIMDataset makes them: per document of a
    sample, detokenize with the SentencePiece binding, cut the text, tokenize each part in Python."""

    def __init__(self, fim_ds) -> None:
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as pb

        self.ds, tok = fim_ds, fim_ds.tokenizer
        data = open(tok.model_path, "rb").read()
        self.sp = spm.SentencePieceProcessor()
        self.sp.LoadFromSerializedProto(data)
        proto = pb.ModelProto()
        proto.ParseFromString(data)
        proto.normalizer_spec.add_dummy_prefix = False
        self.sp_infill = spm.SentencePieceProcessor()
        self.sp_infill.LoadFromSerializedProto(proto.SerializeToString())
        self.pre, self.suf, self.mid, self.eot = tok.pre_id, tok.suf_id, tok.mid_id, tok.eot_id
        self.bos, self.eos = tok.bos_id, tok.eos_id

    def __getitem__(self, i: int) -> np.ndarray:
        ds, packed = self.ds, self.ds.packed
        sizes, out = packed.indexed.sequence_lengths, []
        for k, (d, s, e) in enumerate(packed.pieces(i)):
            ids = packed.indexed.get(d, s, e - s)
            r = _draws(ds.seed, i, k, d)
            if not (s == 0 and e == sizes[d]) or not (r[0] >> 11) / 2.0**53 < ds.rate:
                out.append(ids.astype(np.int64))
                continue
            ids = ids.tolist()
            head = ids[:1] if ids[0] == self.bos else []
            tail = ids[-1:] if len(ids) > len(head) and ids[-1] == self.eos else []
            text = self.sp.decode(ids[len(head):len(ids) - len(tail)])
            n = len(text)
            a, b = sorted(((r[2] * (n + 1)) >> 64, (r[3] * (n + 1)) >> 64))
            prefix, middle, suffix = text[:a], text[a:b], text[b:]
            if (r[1] >> 11) / 2.0**53 < ds.spm_rate:
                new = ([self.pre, self.suf] + self.sp_infill.encode(suffix) + [self.mid]
                       + self.sp.encode(prefix + middle) + [self.eot])
            else:
                new = ([self.pre] + self.sp.encode(prefix) + [self.suf] + self.sp_infill.encode(suffix)
                       + [self.mid] + self.sp_infill.encode(middle) + [self.eot])
            out.append(np.array(head + new + tail, dtype=np.int64))
        target = ds.seq_length + 1
        excess = sum(map(len, out)) - target
        if excess > 0 and len(out) > 1:  # dropped from the documents cut across contexts first
            spans = packed.pieces(i)
            (d0, s0, e0), (d1, s1, e1) = spans[0], spans[-1]
            if not (s1 == 0 and e1 == sizes[d1]):
                n = min(excess, len(out[-1]))
                out[-1], excess = out[-1][:len(out[-1]) - n], excess - n
            if not (s0 == 0 and e0 == sizes[d0]):
                out[0] = out[0][min(excess, len(out[0])):]
        sample = np.concatenate(out)
        if len(sample) < target:  # continue with the stored stream after the sample's end
            k, offset = (int(v) for v in packed.sample_index[int(packed.shuffle_index[i]) + 1])
            rest, order = [packed.indexed.get(int(packed.document_order[k]))[offset + 1:]], packed.document_order
            while sum(map(len, rest)) < target - len(sample):
                k = (k + 1) % len(order)
                rest.append(packed.indexed.get(int(order[k])))
            sample = np.concatenate([sample] + [r.astype(np.int64) for r in rest])
        return sample[:target]


# Rows, each in a child process -----------------------------------------------------------------

def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fim_row(model: str, docs_kind: str = "blocks", root: str = "", seq: int = 4096, samples: int = 300) -> dict:
    """One megacode FIM measurement in this process: FimDataset[i] for i < samples, one thread.
    Returns samples, wall_s, cpu_s, samples_per_s, tokens_per_cpu_s (sample tokens),
    reencoded_per_cpu_s (tokens the transform wrote for transformed documents) and the counters."""
    from megacode.data.fim_dataset import FimStats

    root = root or tempfile.mkdtemp(prefix="bench_fim-")
    ds = build_fim_dataset(model, docs_kind, root, seq, samples)
    stats = FimStats()
    wall, cpu = time.perf_counter(), _cpu()
    for i in range(samples):
        ds.sample(i, stats)
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    # Second pass: wall time inside the C++ call (GIL released there) against the whole sample.
    cpp, in_core = ds._sample, [0.0]

    def timed(*args):
        t = time.perf_counter()
        try:
            return cpp(*args)
        finally:
            in_core[0] += time.perf_counter() - t

    ds._sample = timed
    held = time.perf_counter()
    for i in range(samples):
        ds.sample(i)
    held = time.perf_counter() - held
    c = stats.snapshot()
    return {"samples": samples, "wall_s": wall, "cpu_s": cpu, "samples_per_s": samples / wall,
            "tokens_per_cpu_s": c["sample_tokens"] / cpu, "reencoded_per_cpu_s": c["tokens_out"] / cpu,
            "gil_share": max(0.0, 1.0 - in_core[0] / held), "counts": c}


def child(kind: str, model: str, docs_kind: str, root: str, seq: int, samples: int) -> dict:
    if kind == MEGACODE:
        return fim_row(model, docs_kind, root, seq, samples)
    ds = build_fim_dataset(model, docs_kind, root, seq, samples)
    if kind == "check":  # the baseline's samples are ours, token for token
        base = MegatronStyleFim(ds)
        bad = [i for i in range(samples) if not np.array_equal(base[i], ds[i])]
        return {"samples": samples, "different": bad[:10]}
    if kind == RAW:
        # The text FIM re-encodes in these samples: the whole documents, decoded.
        packed, sizes, texts = ds.packed, ds.packed.indexed.sequence_lengths, []
        for i in range(samples):
            for d, s, e in packed.pieces(i):
                if s == 0 and e == sizes[d]:
                    texts.append(ds.tokenizer.decode(packed.indexed.get(d, s, e - s)))
        sp = MegatronStyleFim(ds).sp
        wall, cpu = time.perf_counter(), _cpu()
        tokens = sum(len(t) for t in sp.encode(texts, num_threads=1))
        wall, cpu = time.perf_counter() - wall, _cpu() - cpu
        return {"wall_s": wall, "cpu_s": cpu, "tokens": tokens, "tokens_per_cpu_s": tokens / cpu}
    if kind == MEGATRON:
        base = MegatronStyleFim(ds)
        wall, cpu = time.perf_counter(), _cpu()
        for i in range(samples):
            base[i]
        wall, cpu = time.perf_counter() - wall, _cpu() - cpu
        return {"samples": samples, "wall_s": wall, "cpu_s": cpu, "samples_per_s": samples / wall,
                "tokens_per_cpu_s": samples * (seq + 1) / cpu}
    if kind.startswith("threads"):  # FimDataset reads on N Python threads, contiguous chunks
        from concurrent.futures import ThreadPoolExecutor

        n = int(kind.split()[1])
        chunks = [range(k * samples // n, (k + 1) * samples // n) for k in range(n)]
        with ThreadPoolExecutor(n) as pool:
            wall, cpu = time.perf_counter(), _cpu()
            list(pool.map(lambda chunk: [ds[i] for i in chunk], chunks))
            wall, cpu = time.perf_counter() - wall, _cpu() - cpu
        return {"samples": samples, "wall_s": wall, "cpu_s": cpu, "samples_per_s": samples / wall,
                "tokens_per_cpu_s": samples * (seq + 1) / cpu}
    if kind.startswith("control"):  # how much parallelism the machine offers right now
        n = int(kind.split()[1])
        wall = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(n) as pool:
            pool.map(_burn, [3_000_000] * n)
        return {"wall_s": time.perf_counter() - wall, "processes": n}
    # "loader fim N" / "loader plain N": StepLoader over the dataset, N reader threads.
    from megacode.config import Layout
    from megacode.data.loader import StepLoader

    _, which, workers = kind.split()
    mbs, gbs = 4, 32
    layout = Layout(world_size=1, tp=1, pp=1, vp=None, dp=1, num_layers=1, global_batch_size=gbs,
                    micro_batch_size=mbs, num_microbatches=gbs // mbs)
    loader = StepLoader(ds if which == "fim" else ds.packed, layout, num_workers=int(workers), backend="python",
                        next_position=lambda consumed: None)
    steps = samples // gbs
    wall, cpu = time.perf_counter(), _cpu()
    for step in range(steps):
        loader.get(step * gbs)
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    loader.close()
    return {"samples": steps * gbs, "wall_s": wall, "cpu_s": cpu, "samples_per_s": steps * gbs / wall,
            "tokens_per_cpu_s": steps * gbs * (seq + 1) / cpu}


def measure(kind: str, model: Path, docs_kind: str, root: str, seq: int, samples: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(model), docs_kind, root, str(seq),
                           str(samples)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Report -----------------------------------------------------------------------------------------

def report(best: Dict[str, dict], workers: List[int]) -> None:
    raw = best[RAW]["tokens_per_cpu_s"]
    m, b = best[MEGACODE], best[MEGATRON]
    reencoded = m["counts"]["tokens_out"]  # the baseline writes the same samples
    print(f"{'row':36s} {'samples/s':>10s} {'sample tok/s/core':>17s} {'re-encoded tok/s/core':>21s}")
    print(f"{RAW:36s} {'':>10s} {'':>17s} {raw / 1e6:20.2f}M")
    for kind, r in ((MEGATRON, b), (MEGACODE, m)):
        print(f"{kind:36s} {r['samples_per_s']:10.1f} {r['tokens_per_cpu_s'] / 1e6:16.2f}M "
              f"{reencoded / r['cpu_s'] / 1e6:20.2f}M")
    rows = (("threads", "megacode FimDataset[i], {} thread(s)"), ("loader plain", "loader without FIM, {} thread(s)"),
            ("loader fim", "loader with FIM, {} thread(s)"))
    for name, label in rows:
        one = best[f"{name} {workers[0]}"]["samples_per_s"]
        for w in workers:
            r = best[f"{name} {w}"]
            print(f"{label.format(w):36s} {r['samples_per_s']:10.1f} "
                  f"{r['tokens_per_cpu_s'] / 1e6:16.2f}M {'':>21s}  x{r['samples_per_s'] / one:.2f} wall")
    n = max(workers)
    par = n * best["control 1"]["wall_s"] / best[f"control {n}"]["wall_s"]
    g = m["gil_share"]
    print(f"control: {n} busy processes ran {par:.2f}x one (parallelism the machine offered during the run)")
    print(f"megacode vs megatron-style: {m['samples_per_s'] / b['samples_per_s']:.1f}x samples/s, "
          f"{b['cpu_s'] / m['cpu_s']:.1f}x less CPU per sample; re-encoded tokens per core "
          f"{reencoded / m['cpu_s'] / raw:.2f}x the binding's raw encode (target >= 0.8), sample tokens per "
          f"core {m['tokens_per_cpu_s'] / raw:.2f}x")
    print(f"GIL held for {100 * g:.1f}% of a FIM sample's time (the rest is C++ with the GIL released): "
          + ", ".join(f"{k} threads <= x{1 / (g + (1 - g) / k):.2f}" for k in (2, 4, 8, 16)) + " on free cores")
    c = m["counts"]
    print(f"FIM counters ({c['samples']} samples): {c['transformed']}/{c['eligible']} whole documents transformed, "
          f"{c['spm']} SPM; {c['dropped']} of {c['sample_tokens']} tokens dropped "
          f"({100 * c['dropped'] / c['sample_tokens']:.3f}%; {c['whole_cut']} whole documents shortened), "
          f"{c['continued']} read past sample ends")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", choices=["blocks", "files"], default="blocks")
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--samples", type=int, default=320, help="samples for the encode/transform rows")
    p.add_argument("--loader-samples", type=int, default=1280, help="samples for the loader rows")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="loader reader threads")
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/megacode/bench"))
    p.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, model, docs_kind, root, seq, samples = args.child
        print(json.dumps(child(kind, model, docs_kind, root, int(seq), int(samples))))
        return
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    model = codellama_model(cache)
    with tempfile.TemporaryDirectory(prefix="bench_fim-") as root:
        check = measure("check", model, args.docs, root, args.seq, args.samples)  # also writes the dataset
        if check["different"]:
            raise SystemExit(f"megatron-style and megacode samples differ at {check['different']}")
        print(f"corpus: stdlib {args.docs}; tokenizer {model}; seq {args.seq}; {args.samples} samples "
              f"(checked equal to the baseline's); {os.cpu_count()} cores; best of {args.repeats}")
        kinds = ([RAW, MEGATRON, MEGACODE]
                 + [f"{w} {n}" for w in ("threads", "loader plain", "loader fim") for n in args.workers]
                 + [f"control {n}" for n in sorted({1, max(args.workers)})])
        best: Dict[str, dict] = {}
        for _ in range(args.repeats):
            for kind in kinds:
                samples = args.loader_samples if kind.startswith(("loader", "threads")) else args.samples
                r = measure(kind, model, args.docs, root, args.seq, samples)
                score = -r["wall_s"] if kind.startswith("control") else r.get("samples_per_s", r.get("tokens_per_cpu_s"))
                if kind not in best or score > best[kind]["score"]:
                    best[kind] = dict(r, score=score)
    report(best, args.workers)


if __name__ == "__main__":
    main()

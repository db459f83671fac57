"""The preprocessing run: chunks -> worker threads -> indexed datasets, in input order.

    main thread                                N worker threads (--workers N, scheduler.py)
    cut chunks (plain JSONL: byte ranges;  -->  read, scan JSON, check, encode (worker.py,
      compressed: decompressed lines)           C++ with the GIL released) --> token arrays
    write {prefix}_{key}_document.bin/.idx, sidecars, progress, summary, in chunk order

--workers 1 runs everything in the main thread. A bounded number of chunks is in flight, so
memory stays bounded on any input size, and results are written in chunk order, so the output
is the same for every N. Every output file is written under a temporary name and moved to its
final name only when the run succeeds: a crash leaves no half dataset under a final name. Datasets are moved last (the .idx last of all), so a
present .idx means a complete run.

Outputs for each --json-keys KEY (Megatron-LM's names):
    {prefix}_{KEY}_document.bin / .idx        tokens, byte-compatible with Megatron-Core
    {prefix}_{KEY}_document.meta.jsonl        one JSON object per document, in dataset order:
                                              {"path", "lang"} for source trees, the --meta-keys
                                              fields for JSONL; written only when there is metadata
    --rejects FILE                            one JSON object per rejected line or file:
                                              {"file", "line" or "path", "reason", "detail"}
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from megacode.data.indexed import IndexedDatasetWriter, best_dtype, make_parent_dir
from megacode.data.preprocess.progress import Progress
from megacode.data.preprocess.scheduler import ordered_results
from megacode.data.preprocess.sources import all_chunks, disk_size, resolve_inputs
from megacode.data.preprocess.worker import ChunkProcessor, ChunkResult, WorkerOptions
from megacode.tokenizer import load


@dataclass
class PreprocessConfig:
    inputs: Sequence[str]  # JSONL files (.jsonl/.json, .gz, .zst), directories (source trees), globs
    output_prefix: str
    tokenizer_model: str
    json_keys: Tuple[str, ...] = ("text",)
    append_eod: bool = False  # EOS after each document (Megatron's --append-eod)
    prepend_bos: bool = False  # BOS before each document (older Megatron Llama2Tokenizer did this)
    workers: int = 1
    chunk_bytes: int = 1 << 20
    extensions: Optional[Sequence[str]] = None  # source trees: file extensions (default: sources.LANGUAGES)
    meta_keys: Tuple[str, ...] = ()
    rejects_path: Optional[str] = None
    log_interval: int = 1000  # documents between log lines when stderr is not a terminal
    progress: bool = True
    backend: str = "auto"  # tokenizer backend, see megacode.tokenizer.load

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("no input given")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {self.chunk_bytes}")
        if not self.json_keys or len(set(self.json_keys)) != len(self.json_keys):
            raise ValueError(f"json_keys must be distinct and non-empty, got {list(self.json_keys)}")
        if self.log_interval < 1:
            raise ValueError(f"log_interval must be >= 1, got {self.log_interval}")


@dataclass
class Summary:
    documents: int = 0
    tokens: int = 0
    rejected: Counter = field(default_factory=Counter)
    input_bytes: int = 0
    seconds: float = 0.0
    outputs: List[str] = field(default_factory=list)  # dataset prefixes written

    def format(self) -> str:
        s = max(self.seconds, 1e-9)
        lines = [
            f"kept {self.documents:,} documents, {self.tokens:,} tokens in {self.seconds:.1f} s "
            f"({self.documents / s:,.0f} docs/s, {self.input_bytes / s / 1e6:.2f} MB/s, {self.tokens / s:,.0f} tokens/s)",
            f"rejected {sum(self.rejected.values()):,}"
            + (": " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.rejected.items())) if self.rejected else ""),
        ]
        lines += [f"wrote {p}.bin / .idx" for p in self.outputs]
        return "\n".join(lines)


def _tmp(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class _Outputs:
    """Writers and sidecar files of one run, all under temporary names until `commit`."""

    def __init__(self, cfg: PreprocessConfig, dtype) -> None:
        self.dtype = dtype
        self.prefixes = [f"{cfg.output_prefix}_{key}_document" for key in cfg.json_keys]
        self.writers = {}
        self.sidecars: List[Tuple[str, str]] = []  # (temporary, final)
        self.meta_files, self.rejects_file = {}, None
        self.lines_before = {}  # jsonl file -> lines in the chunks written so far
        for key, prefix in zip(cfg.json_keys, self.prefixes):
            self.writers[key] = IndexedDatasetWriter(prefix, dtype=dtype)
        if cfg.rejects_path:
            make_parent_dir(cfg.rejects_path)
            tmp = _tmp(cfg.rejects_path)
            self.sidecars.append((tmp, cfg.rejects_path))
            self.rejects_file = open(tmp, "w", encoding="utf-8")

    def write(self, res: ChunkResult) -> None:
        for key, writer in self.writers.items():
            # view(): arrays unpickled from a worker carry a copy of the dtype object, and the
            # C++ writer recognises only numpy's canonical instance as "the dataset dtype".
            writer.add_documents(res.tokens[key].view(self.dtype), res.lengths[key])
        if res.meta:
            for key, prefix in zip(self.writers, self.prefixes):
                if key not in self.meta_files:
                    final = prefix + ".meta.jsonl"
                    tmp = _tmp(final)
                    self.sidecars.append((tmp, final))
                    self.meta_files[key] = open(tmp, "w", encoding="utf-8")
                self.meta_files[key].write("\n".join(res.meta) + "\n")
        if self.rejects_file is not None:
            for source, where, reason, detail in res.rejects:
                if isinstance(where, int):  # chunk-relative line index -> file line number
                    pos = {"line": self.lines_before.get(source, 0) + where + 1}
                else:
                    pos = {"path": where}
                rec = {"file": source, **pos, "reason": reason, "detail": detail}
                self.rejects_file.write(json.dumps(rec, ensure_ascii=False) + "\n")
        if res.lines:
            self.lines_before[res.source] = self.lines_before.get(res.source, 0) + res.lines

    def _close_files(self) -> None:
        for f in list(self.meta_files.values()) + ([self.rejects_file] if self.rejects_file else []):
            f.close()

    def commit(self) -> None:
        self._close_files()
        for tmp, final in self.sidecars:
            os.replace(tmp, final)
        for writer in self.writers.values():
            writer.finalize()

    def abort(self) -> None:
        self._close_files()
        for writer in self.writers.values():
            writer.abort()
        for tmp, _ in self.sidecars:
            if os.path.exists(tmp):
                os.remove(tmp)


def preprocess(cfg: PreprocessConfig) -> Summary:
    """Run the whole pipeline; returns the summary (also printed to stderr)."""
    inputs = resolve_inputs(cfg.inputs)
    tokenizer = load(cfg.tokenizer_model, cfg.backend)
    dtype = best_dtype(tokenizer.vocab_size)
    options = WorkerOptions(tuple(cfg.json_keys), cfg.append_eod, cfg.prepend_bos, tuple(cfg.meta_keys), dtype.name)
    total = sum(disk_size(i, cfg.extensions) for i in inputs)
    summary = Summary()
    outputs = _Outputs(cfg, dtype)
    start = time.perf_counter()
    progress = Progress(total, cfg.progress, cfg.log_interval, start)
    results = ordered_results(all_chunks(inputs, cfg.chunk_bytes, cfg.extensions), ChunkProcessor(tokenizer, options),
                              cfg.workers)
    try:
        for res in results:
            outputs.write(res)
            ntok = sum(int(t.shape[0]) for t in res.tokens.values())
            summary.documents += res.documents
            summary.tokens += ntok
            summary.rejected.update(res.rejected)
            summary.input_bytes += res.text_bytes
            progress.update(res.disk_bytes, res.documents, res.text_bytes, ntok)
        outputs.commit()
    except BaseException:
        outputs.abort()
        raise
    finally:
        results.close()
        progress.close()
    summary.seconds = time.perf_counter() - start
    summary.outputs = outputs.prefixes
    if cfg.progress:
        print(summary.format(), file=sys.stderr)
    return summary

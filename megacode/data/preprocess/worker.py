"""Turns one chunk of input into token arrays: parse, check, encode (runs in worker processes).

A document is kept only when every requested key holds a non-empty string; otherwise it is
rejected as a whole (so the datasets of several --json-keys stay aligned document for document)
and counted under one reason:

    blank_line   a JSONL line with nothing but whitespace
    not_utf8     bytes that are not UTF-8 (or a JSON string with a lone surrogate escape)
    bad_json     a line that does not parse as JSON
    not_object   valid JSON that is not an object
    missing_key  a requested key is absent
    not_string   a requested key holds something other than a string
    empty        a requested key holds "" (source trees: a zero-byte file)
    unreadable   a source file that cannot be read

Token ids are those of `Tokenizer.encode` (SentencePiece's ids, no BOS unless --prepend-bos),
plus EOS with --append-eod: what Megatron-LM's preprocess_data.py writes for a SentencePiece
model. They come back as one flat array and lengths per key, in document order.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from megacode.data.preprocess.sources import Chunk, language_of

# A JSON \uD800-\uDFFF escape: only such lines can decode to a str that is not valid Unicode.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass
class WorkerOptions:
    json_keys: Tuple[str, ...] = ("text",)
    append_eod: bool = False
    prepend_bos: bool = False
    meta_keys: Tuple[str, ...] = ()  # JSONL fields copied to the metadata sidecar
    dtype: str = "uint16"


@dataclass
class ChunkResult:
    index: int
    source: str = ""
    documents: int = 0
    tokens: Dict[str, np.ndarray] = field(default_factory=dict)  # key -> [sum(lengths)]
    lengths: Dict[str, np.ndarray] = field(default_factory=dict)  # key -> [documents] int64
    meta: List[str] = field(default_factory=list)  # one JSON line per kept document, or none
    rejected: Counter = field(default_factory=Counter)  # reason -> count
    # (file, where, reason, detail); where: jsonl line index within the chunk (0-based; the main
    # process makes it a file line number), or a source-tree file's relative path
    rejects: List[Tuple[str, object, str, str]] = field(default_factory=list)
    lines: int = 0  # jsonl: lines in this chunk
    text_bytes: int = 0  # input bytes of this chunk (lines or files)
    disk_bytes: int = 0


class ChunkProcessor:
    """Holds the tokenizer of one process; `__call__(chunk)` -> ChunkResult."""

    def __init__(self, tokenizer, options: WorkerOptions) -> None:
        self.tok = tokenizer
        self.opt = options
        self.dtype = np.dtype(options.dtype)

    def __call__(self, chunk: Chunk) -> ChunkResult:
        res = ChunkResult(chunk.index, chunk.source, disk_bytes=chunk.disk_bytes)
        if chunk.kind == "jsonl":
            docs = self._parse_jsonl(chunk, res)
        else:
            docs = self._read_files(chunk, res)
        res.documents = len(docs)
        for k, key in enumerate(self.opt.json_keys):
            flat, lengths = self.tok.encode_batch(
                [d[k] for d in docs], bos=self.opt.prepend_bos, eos=self.opt.append_eod
            )
            res.tokens[key] = flat.astype(self.dtype, copy=False)
            res.lengths[key] = lengths
        return res

    def _reject(self, res: ChunkResult, source: str, where, reason: str, detail: str = "") -> None:
        res.rejected[reason] += 1
        res.rejects.append((source, where, reason, detail))

    def _parse_jsonl(self, chunk: Chunk, res: ChunkResult) -> List[Tuple[str, ...]]:
        keys, meta_keys = self.opt.json_keys, self.opt.meta_keys
        data = chunk.lines_bytes()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()  # the chunk ends with a newline
        res.text_bytes, res.lines = len(data), len(lines)
        docs = []
        for n, raw in enumerate(lines):
            if not raw.strip():
                self._reject(res, chunk.source, n, "blank_line")
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                self._reject(res, chunk.source, n, "not_utf8", f"byte {e.start}: {raw[e.start:e.start + 4]!r}")
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                self._reject(res, chunk.source, n, "bad_json", str(e))
                continue
            if not isinstance(obj, dict):
                self._reject(res, chunk.source, n, "not_object", f"a JSON {type(obj).__name__}")
                continue
            doc = self._fields(obj, keys, raw, res, chunk.source, n)
            if doc is None:
                continue
            docs.append(doc)
            if meta_keys:
                res.meta.append(json.dumps({k: obj.get(k) for k in meta_keys}, ensure_ascii=False))
        return docs

    def _fields(self, obj: dict, keys: Sequence[str], raw: bytes, res, source: str, n: int) -> Optional[Tuple[str, ...]]:
        values = []
        for key in keys:
            if key not in obj:
                self._reject(res, source, n, "missing_key", key)
                return None
            text = obj[key]
            if not isinstance(text, str):
                self._reject(res, source, n, "not_string", f"{key}: a JSON {type(text).__name__}")
                return None
            if not text:
                self._reject(res, source, n, "empty", key)
                return None
            values.append(text)
        if _SURROGATE_ESCAPE.search(raw):
            for key, text in zip(keys, values):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as e:
                    self._reject(res, source, n, "not_utf8", f"{key}: lone surrogate at character {e.start}")
                    return None
        return tuple(values)

    def _read_files(self, chunk: Chunk, res: ChunkResult) -> List[Tuple[str, ...]]:
        docs = []
        nkeys = len(self.opt.json_keys)
        for rel in chunk.files:
            try:
                with open(os.path.join(chunk.source, rel), "rb") as f:
                    data = f.read()
            except OSError as e:
                self._reject(res, chunk.source, rel, "unreadable", e.strerror or str(e))
                continue
            res.text_bytes += len(data)
            if not data:
                self._reject(res, chunk.source, rel, "empty")
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                self._reject(res, chunk.source, rel, "not_utf8", f"byte {e.start}: {data[e.start:e.start + 4]!r}")
                continue
            docs.append((text,) * nkeys)
            res.meta.append(json.dumps({"path": rel, "lang": language_of(rel)}, ensure_ascii=False))
        return docs


# Per-process state for multiprocessing workers: set by `init_worker` (spawn), or set in the
# parent before the pool forks (`preload`), so forked workers start with a loaded tokenizer.
_PROCESSOR: Optional[ChunkProcessor] = None


def preload(processor: Optional[ChunkProcessor]) -> None:
    global _PROCESSOR
    _PROCESSOR = processor


def init_worker(model_path: str, backend: str, options: WorkerOptions) -> None:
    global _PROCESSOR
    from megacode.tokenizer import load

    _PROCESSOR = ChunkProcessor(load(model_path, backend), options)


def process_chunk(chunk: Chunk) -> ChunkResult:
    assert _PROCESSOR is not None, "init_worker was not called in this process"
    return _PROCESSOR(chunk)

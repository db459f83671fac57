"""Turns one chunk of input into token arrays: parse, check, encode (runs in worker threads).

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

JSONL chunks take one C++ call (`Tokenizer.encode_jsonl`, csrc/jsonl_scan.h) that scans, checks
and encodes every ordinary line with the GIL released; the lines it cannot decide for sure
(anything rejected, and rarities such as lone surrogate escapes) are judged here by Python's
json, line by line, exactly as the all-Python path (`_parse_jsonl`, used with the binding
backend) judges every line. Source-file chunks likewise (`Tokenizer.encode_files`: read, check,
encode in C++; unreadable, empty or non-UTF-8 files judged by `_judge_file`).
tests/data/test_preprocess_fast_path.py holds the C++ and Python paths equal.
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
    # (file, where, reason, detail); where: jsonl line index within the chunk (0-based; the
    # writer makes it a file line number), or a source-tree file's relative path
    rejects: List[Tuple[str, object, str, str]] = field(default_factory=list)
    lines: int = 0  # jsonl: lines in this chunk
    text_bytes: int = 0  # input bytes of this chunk (lines or files)
    disk_bytes: int = 0


def _in_order(order: np.ndarray, first: Tuple[np.ndarray, np.ndarray],
              second: Tuple[np.ndarray, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Two runs of documents (tokens, lengths) -> one, document i of the result being document
    order[i] of the first run followed by the second."""
    docs = []
    for flat, lengths in (first, second):
        docs += np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
    return (np.concatenate([docs[i] for i in order]).astype(first[0].dtype, copy=False),
            np.concatenate([first[1], second[1]])[order])


class ChunkProcessor:
    """`__call__(chunk)` -> ChunkResult; one instance serves every worker thread (no state
    besides the tokenizer, whose C++ core gives each thread its own scratch and word cache)."""

    def __init__(self, tokenizer, options: WorkerOptions) -> None:
        self.tok = tokenizer
        self.opt = options
        self.dtype = np.dtype(options.dtype)

    def __call__(self, chunk: Chunk) -> ChunkResult:
        res = ChunkResult(chunk.index, chunk.source, disk_bytes=chunk.disk_bytes)
        if chunk.kind == "jsonl" and self._encode_jsonl_fast(chunk, res):
            return res
        if chunk.kind == "files" and self._encode_files_fast(chunk, res):
            return res
        if chunk.kind == "jsonl":
            docs = self._parse_jsonl(chunk, res)
        else:
            docs = self._read_files(chunk, res)
        res.documents = len(docs)
        for k, key in enumerate(self.opt.json_keys):
            flat, lengths = self._encode([d[k] for d in docs])
            res.tokens[key] = flat.astype(self.dtype, copy=False)
            res.lengths[key] = lengths
        return res

    def _encode(self, texts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        return self.tok.encode_batch(texts, bos=self.opt.prepend_bos, eos=self.opt.append_eod)

    def _reject(self, res: ChunkResult, source: str, where, reason: str, detail: str = "") -> None:
        res.rejected[reason] += 1
        res.rejects.append((source, where, reason, detail))

    def _encode_jsonl_fast(self, chunk: Chunk, res: ChunkResult) -> bool:
        """The C++ path (csrc/jsonl_scan.h): lines parsed and encoded without Python objects;
        only the lines it leaves to Python (status 2) go through `_judge_line`. False when the
        tokenizer has no C++ core (then the whole chunk takes the Python path)."""
        data = chunk.lines_bytes()
        meta_keys = self.opt.meta_keys
        out = self.tok.encode_jsonl(data, self.opt.json_keys, bos=self.opt.prepend_bos, eos=self.opt.append_eod,
                                    meta_keys=meta_keys)
        if out is None:
            return False
        status, tokens, lengths, meta_spans = out
        res.text_bytes, res.lines = len(data), len(status)
        kept_lines = np.flatnonzero(status == 0)
        if meta_keys:  # each kept line's metadata, as _parse_jsonl writes it
            res.meta = [json.dumps({k: json.loads(data[b:e]) if b >= 0 else None for k, (b, e) in zip(meta_keys, spans)},
                                   ensure_ascii=False) for spans in meta_spans.tolist()]
        judged: List[Tuple[int, Tuple[str, ...], str]] = []  # (line, texts, metadata) kept by Python's judgment
        odd = np.flatnonzero(status != 0)
        lines = data.split(b"\n") if len(odd) else []
        for n in odd.tolist():
            if status[n] == 1:
                self._reject(res, chunk.source, n, "blank_line")
                continue
            judgement = self._judge_line(lines[n], n, res, chunk.source)
            if judgement is not None:
                judged.append((n, judgement[0], self._meta_line(judgement[1]) if meta_keys else ""))
        res.documents = len(kept_lines) + len(judged)
        if not judged:
            for k, key in enumerate(self.opt.json_keys):
                res.tokens[key], res.lengths[key] = tokens[k].astype(self.dtype, copy=False), lengths[k]
            return True
        judged_lines = np.array([n for n, _, _ in judged], dtype=kept_lines.dtype)
        order = np.argsort(np.concatenate([kept_lines, judged_lines]), kind="stable")  # documents in line order
        for k, key in enumerate(self.opt.json_keys):
            flat, lens = _in_order(order, (tokens[k], lengths[k]), self._encode([d[k] for _, d, _ in judged]))
            res.tokens[key], res.lengths[key] = flat.astype(self.dtype, copy=False), lens
        if meta_keys:
            both = res.meta + [m for _, _, m in judged]
            res.meta = [both[i] for i in order]
        return True

    def _parse_jsonl(self, chunk: Chunk, res: ChunkResult) -> List[Tuple[str, ...]]:
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
            judgement = self._judge_line(raw, n, res, chunk.source)
            if judgement is None:
                continue
            doc, obj = judgement
            docs.append(doc)
            if self.opt.meta_keys:
                res.meta.append(self._meta_line(obj))
        return docs

    def _meta_line(self, obj: dict) -> str:
        return json.dumps({k: obj.get(k) for k in self.opt.meta_keys}, ensure_ascii=False)

    def _judge_line(self, raw: bytes, n: int, res: ChunkResult, source: str) -> Optional[Tuple[Tuple[str, ...], dict]]:
        """One non-blank line by Python's json: (the requested keys' texts, the object), or None
        after rejecting it under its reason."""
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self._reject(res, source, n, "not_utf8", f"byte {e.start}: {raw[e.start:e.start + 4]!r}")
            return None
        try:
            obj = json.loads(line)
        except ValueError as e:
            self._reject(res, source, n, "bad_json", str(e))
            return None
        except RecursionError:
            self._reject(res, source, n, "bad_json", "nested too deeply")
            return None
        if not isinstance(obj, dict):
            self._reject(res, source, n, "not_object", f"a JSON {type(obj).__name__}")
            return None
        doc = self._fields(obj, self.opt.json_keys, raw, res, source, n)
        return None if doc is None else (doc, obj)

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

    def _encode_files_fast(self, chunk: Chunk, res: ChunkResult) -> bool:
        """The C++ path for source files: read, checked and encoded with the GIL released; the
        files it leaves to Python (unreadable, empty, not UTF-8) go through `_judge_file`."""
        out = self.tok.encode_files(chunk.source, chunk.files, bos=self.opt.prepend_bos, eos=self.opt.append_eod)
        if out is None:
            return False
        status, sizes, tokens, lengths = out
        kept = np.flatnonzero(status == 0)
        res.text_bytes = int(sizes[kept].sum())
        judged: List[Tuple[int, str]] = []  # (file index, text) kept by Python's judgment
        for i in np.flatnonzero(status != 0).tolist():
            text = self._judge_file(chunk.source, chunk.files[i], res)
            if text is not None:
                judged.append((i, text))
        res.documents = len(kept) + len(judged)
        files = kept.tolist()
        if judged:
            order = np.argsort(np.concatenate([kept, np.array([i for i, _ in judged], dtype=kept.dtype)]), kind="stable")
            tokens, lengths = _in_order(order, (tokens, lengths), self._encode([t for _, t in judged]))
            both = files + [i for i, _ in judged]
            files = [both[j] for j in order]
        flat = tokens.astype(self.dtype, copy=False)
        for key in self.opt.json_keys:  # a file is the same text under every key
            res.tokens[key], res.lengths[key] = flat, lengths
        res.meta = [self._file_meta(chunk.files[i]) for i in files]
        return True

    def _read_files(self, chunk: Chunk, res: ChunkResult) -> List[Tuple[str, ...]]:
        docs = []
        nkeys = len(self.opt.json_keys)
        for rel in chunk.files:
            text = self._judge_file(chunk.source, rel, res)
            if text is not None:
                docs.append((text,) * nkeys)
                res.meta.append(self._file_meta(rel))
        return docs

    @staticmethod
    def _file_meta(rel: str) -> str:
        return json.dumps({"path": rel, "lang": language_of(rel)}, ensure_ascii=False)

    def _judge_file(self, root: str, rel: str, res: ChunkResult) -> Optional[str]:
        """One source file by Python: its text, or None after rejecting it under its reason
        (counting the bytes read into res.text_bytes either way)."""
        try:
            with open(os.path.join(root, rel), "rb") as f:
                data = f.read()
        except OSError as e:
            self._reject(res, root, rel, "unreadable", e.strerror or str(e))
            return None
        res.text_bytes += len(data)
        if not data:
            self._reject(res, root, rel, "empty")
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            self._reject(res, root, rel, "not_utf8", f"byte {e.start}: {data[e.start:e.start + 4]!r}")
            return None

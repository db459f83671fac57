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


def _splice(flat: np.ndarray, lengths: np.ndarray, lines: np.ndarray, extra: Tuple[np.ndarray, np.ndarray],
            extra_lines: List[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Merge two runs of documents (tokens, lengths, line of each document) into line order."""
    extra_flat, extra_lengths = extra
    docs = np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
    docs += np.split(extra_flat, np.cumsum(extra_lengths)[:-1]) if len(extra_lengths) else []
    order = np.argsort(np.concatenate([lines, np.asarray(extra_lines, dtype=lines.dtype)]), kind="stable")
    return (np.concatenate([docs[i] for i in order]).astype(flat.dtype, copy=False),
            np.concatenate([lengths, extra_lengths])[order])


class ChunkProcessor:
    """Holds the tokenizer of one process; `__call__(chunk)` -> ChunkResult."""

    def __init__(self, tokenizer, options: WorkerOptions) -> None:
        self.tok = tokenizer
        self.opt = options
        self.dtype = np.dtype(options.dtype)

    def __call__(self, chunk: Chunk) -> ChunkResult:
        res = ChunkResult(chunk.index, chunk.source, disk_bytes=chunk.disk_bytes)
        if chunk.kind == "jsonl" and not self.opt.meta_keys and self._encode_jsonl_fast(chunk, res):
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
        out = self.tok.encode_jsonl(data, self.opt.json_keys, bos=self.opt.prepend_bos, eos=self.opt.append_eod)
        if out is None:
            return False
        status, tokens, lengths = out
        res.text_bytes, res.lines = len(data), len(status)
        kept_lines = np.flatnonzero(status == 0)
        judged: List[Tuple[int, Tuple[str, ...]]] = []  # (line, texts) kept by Python's judgment
        odd = np.flatnonzero(status != 0)
        lines = data.split(b"\n") if len(odd) else []
        for n in odd.tolist():
            if status[n] == 1:
                self._reject(res, chunk.source, n, "blank_line")
                continue
            judgement = self._judge_line(lines[n], n, res, chunk.source)
            if judgement is not None:
                judged.append((n, judgement[0]))
        res.documents = len(kept_lines) + len(judged)
        for k, key in enumerate(self.opt.json_keys):
            flat, lens = tokens[k], lengths[k]
            if judged:
                flat, lens = _splice(flat, lens, kept_lines, self._encode([d[k] for _, d in judged]),
                                     [n for n, _ in judged])
            res.tokens[key] = flat.astype(self.dtype, copy=False)
            res.lengths[key] = lens
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
                res.meta.append(json.dumps({k: obj.get(k) for k in self.opt.meta_keys}, ensure_ascii=False))
        return docs

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

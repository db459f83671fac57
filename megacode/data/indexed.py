"""Memory-mapped indexed datasets, byte-compatible with Megatron-Core's `.bin`/`.idx` pair.

Format (DESIGN.md §3; field by field in csrc/indexed.cpp)::

    PREFIX.idx   b"MMIDIDX\\x00\\x00" | <Q version=1 | <B dtype code | <Q S sequences | <Q D doc entries
                 | int32[S] lengths | int64[S] byte pointers into .bin | int64[D] document index
                 (| int8[S] modes, Megatron multimodal files only)
    PREFIX.bin   the token arrays of the S sequences back to back

Our writer stores one document as one sequence (document index = 0..S); the reader accepts any
valid Megatron file, where a document may span several sequences. The reader checks the whole
index on open (sizes, pointers, document index), so a truncated or corrupt file raises
`IndexedDatasetError` naming the file and the problem instead of crashing or reading wrong tokens.

The writer streams to temporary names and renames at `finalize()`: a crash never leaves a half
dataset under the final name.
"""

from __future__ import annotations

import mmap
import os
import shutil
import struct
import uuid
from typing import List, Optional, Sequence, Union

import numpy as np

from megacode import _indexed

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER_SIZE = 34  # magic 9 + version 8 + dtype code 1 + sequence count 8 + document count 8

# Megatron-Core's DType enum: code -> NumPy dtype.
DTYPE_CODES = {
    1: np.dtype(np.uint8), 2: np.dtype(np.int8), 3: np.dtype(np.int16), 4: np.dtype(np.int32),
    5: np.dtype(np.int64), 6: np.dtype(np.float64), 7: np.dtype(np.float32), 8: np.dtype(np.uint16),
}
CODE_OF_DTYPE = {dt: code for code, dt in DTYPE_CODES.items()}


class IndexedDatasetError(ValueError):
    """A dataset file is missing, truncated or inconsistent; the message names the file."""


def best_dtype(vocab_size: Optional[int]) -> np.dtype:
    """uint16 when every token id fits with room to spare (vocab < 65,500), else int32."""
    if vocab_size is not None and vocab_size < 65500:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def idx_path(prefix: str) -> str:
    return prefix + ".idx"


def bin_path(prefix: str) -> str:
    return prefix + ".bin"


def _code_of(dtype) -> int:
    dt = np.dtype(dtype)
    if dt not in CODE_OF_DTYPE or dt.kind == "f":
        raise ValueError(f"token dtype must be one of uint8, int8, int16, uint16, int32, int64; got {dt}")
    return CODE_OF_DTYPE[dt]


class IndexedDatasetWriter:
    """Writes PREFIX.bin / PREFIX.idx; one `add_document` call is one document and one sequence.

    Use as a context manager: a clean exit finalizes, an exception aborts (temporaries removed).
    """

    def __init__(self, prefix: str, dtype=np.uint16) -> None:
        self.prefix = str(prefix)
        self.dtype = np.dtype(dtype)
        self._code = _code_of(self.dtype)
        make_parent_dir(self.prefix)
        tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._tmp_bin = bin_path(self.prefix) + tag
        self._tmp_idx = idx_path(self.prefix) + tag
        self._writer = _indexed.BinWriter(self._tmp_bin, self._code)
        self._done = False

    def _tokens(self, tokens) -> np.ndarray:
        """Tokens as a 1-D contiguous array the C++ writer takes: the dataset dtype, int32 or int64."""
        arr = np.asarray(tokens)
        if arr.size == 0:
            return np.zeros(0, dtype=self.dtype)  # an empty document ([] comes in as float64)
        if arr.dtype.kind not in "iub":
            raise ValueError(f"{self.prefix}: tokens must be integers, got dtype {arr.dtype}")
        arr = arr.reshape(-1)
        if arr.dtype not in (self.dtype, np.dtype(np.int32), np.dtype(np.int64)):
            arr = arr.astype(np.int64)  # C++ converts int32/int64 with a range check
        return np.ascontiguousarray(arr)

    def add_document(self, tokens) -> None:
        """Append one document (1-D token ids)."""
        self._check_open()
        arr = self._tokens(tokens)
        self._add(arr, np.array([arr.shape[0]], dtype=np.int64))

    def add_documents(self, tokens_flat, lengths) -> None:
        """Append many documents at once: `tokens_flat` [sum(lengths)], `lengths` [n]."""
        self._check_open()
        lengths = np.ascontiguousarray(np.asarray(lengths).reshape(-1), dtype=np.int64)
        self._add(self._tokens(tokens_flat), lengths)

    def _add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        try:
            self._writer.add(tokens, lengths)
        except ValueError as e:  # C++ names the value; we name the dataset and document
            raise ValueError(f"{self.prefix}: document {self.num_documents} onwards: {e}") from None

    @property
    def num_documents(self) -> int:
        return self._writer.num_sequences

    @property
    def num_tokens(self) -> int:
        return self._writer.num_tokens

    def finalize(self) -> None:
        """Write the index and move both files to their final names (.bin first, then .idx)."""
        self._check_open()
        try:
            self._writer.close()
            lengths = self._writer.lengths()
            docs = np.arange(lengths.shape[0] + 1, dtype=np.int64)
            _indexed.write_index(self._tmp_idx, self._code, lengths, docs)
            os.replace(self._tmp_bin, bin_path(self.prefix))
            os.replace(self._tmp_idx, idx_path(self.prefix))
        except BaseException:
            self.abort()
            raise
        self._done = True

    def abort(self) -> None:
        """Drop what was written; the final names are left untouched."""
        if self._done:
            return
        self._done = True
        try:
            self._writer.close()
        except RuntimeError:
            pass
        for path in (self._tmp_bin, self._tmp_idx):
            if os.path.exists(path):
                os.remove(path)

    def _check_open(self) -> None:
        if self._done:
            raise RuntimeError(f"{self.prefix}: writer already finalized or aborted")

    def __enter__(self) -> "IndexedDatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.abort()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            try:
                self.abort()
            except Exception:  # interpreter shutdown: leave the temporaries, never the final names
                pass


def _map(path: str) -> Union[mmap.mmap, bytes]:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""  # mmap refuses empty files
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


class IndexedDataset:
    """Read-only, memory-mapped view of PREFIX.bin / PREFIX.idx, validated on open.

    `ds[i]` is sequence i as a zero-copy array (read-only) of `ds.dtype`.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = str(prefix)
        self._open()

    def _fail(self, path: str, problem: str) -> IndexedDatasetError:
        return IndexedDatasetError(f"{path}: {problem}")

    def _open(self) -> None:
        ipath, bpath = idx_path(self.prefix), bin_path(self.prefix)
        for path in (ipath, bpath):
            if not os.path.isfile(path):
                raise self._fail(path, "no such file")
        idx_size = os.path.getsize(ipath)
        with open(ipath, "rb") as f:
            header = f.read(HEADER_SIZE)
        if len(header) < HEADER_SIZE:
            raise self._fail(ipath, f"truncated header: {len(header)} bytes, the header needs {HEADER_SIZE}")
        if header[:9] != MAGIC:
            raise self._fail(ipath, f"bad magic {header[:9]!r}, expected {MAGIC!r} (not a Megatron index)")
        version, code, n_seq, n_doc = struct.unpack("<QBQQ", header[9:])
        if version != VERSION:
            raise self._fail(ipath, f"unsupported version {version}, expected {VERSION}")
        if code not in DTYPE_CODES:
            raise self._fail(ipath, f"unknown dtype code {code}, expected one of {sorted(DTYPE_CODES)}")
        self.dtype = DTYPE_CODES[code]
        body = n_seq * (4 + 8) + n_doc * 8
        if idx_size not in (HEADER_SIZE + body, HEADER_SIZE + body + n_seq):
            raise self._fail(ipath, f"file size {idx_size} bytes does not match its counts: {n_seq} sequences and "
                                    f"{n_doc} document entries need {HEADER_SIZE + body} bytes")
        self._idx_map = _map(ipath)
        self._bin_map = _map(bpath)
        bin_size = len(self._bin_map)
        off = HEADER_SIZE
        self.sequence_lengths = np.frombuffer(self._idx_map, np.int32, n_seq, off)  # [S]
        off += 4 * n_seq
        self.sequence_pointers = np.frombuffer(self._idx_map, np.int64, n_seq, off)  # [S] bytes
        off += 8 * n_seq
        self.document_indices = np.frombuffer(self._idx_map, np.int64, n_doc, off)  # [D]
        off += 8 * n_doc
        self.sequence_modes = np.frombuffer(self._idx_map, np.int8, n_seq, off) if idx_size > off else None
        problem = _indexed.validate(self.sequence_lengths, self.sequence_pointers, self.document_indices,
                                    n_seq, n_doc, self.dtype.itemsize, bin_size)
        if problem:
            if problem.startswith("the .bin"):
                raise self._fail(bpath, problem[len("the .bin "):] + f" ({ipath})")
            raise self._fail(ipath, problem)
        self._tokens = np.frombuffer(self._bin_map, self.dtype)  # [total tokens]

    def __len__(self) -> int:
        return int(self.sequence_lengths.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self._tokens.shape[0])

    @property
    def num_documents(self) -> int:
        return int(self.document_indices.shape[0]) - 1

    def _index(self, i: int) -> int:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.prefix}: sequence index {i} out of range [0, {n})")
        return i

    def __getitem__(self, i) -> Union[np.ndarray, List[np.ndarray]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = self._index(i)
        start = int(self.sequence_pointers[i]) // self.dtype.itemsize
        return self._tokens[start:start + int(self.sequence_lengths[i])]

    def get(self, i: int, offset: int = 0, length: Optional[int] = None) -> np.ndarray:
        """Tokens [offset, offset + length) of sequence i (to its end when length is None)."""
        i = self._index(i)
        size = int(self.sequence_lengths[i])
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise IndexError(f"{self.prefix}: span offset={offset} length={length} outside sequence {i} "
                             f"of length {size}")
        start = int(self.sequence_pointers[i]) // self.dtype.itemsize + offset
        return self._tokens[start:start + length]

    def identity(self) -> tuple:
        """What the cached sample indices depend on: absolute path, sizes and mtimes of both files."""
        out = [os.path.abspath(self.prefix)]
        for path in (idx_path(self.prefix), bin_path(self.prefix)):
            st = os.stat(path)
            out += [st.st_size, st.st_mtime_ns]
        return tuple(out)

    def __getstate__(self) -> dict:
        return {"prefix": self.prefix}  # workers re-map the files

    def __setstate__(self, state: dict) -> None:
        self.prefix = state["prefix"]
        self._open()

    def __repr__(self) -> str:
        return (f"IndexedDataset({self.prefix!r}, sequences={len(self)}, documents={self.num_documents}, "
                f"tokens={self.num_tokens}, dtype={self.dtype})")


def make_parent_dir(path: str) -> None:
    """Create the directory an output path (prefix or file) lies in, as `mkdir -p` does; a parent
    that exists as a file is an error naming it (not a failure to open a temporary file)."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise IndexedDatasetError(f"{parent} exists and is not a directory (output {path})")
    os.makedirs(parent, exist_ok=True)


def merge_datasets(prefixes: Sequence[str], out_prefix: str) -> None:
    """Concatenate datasets (same dtype) into OUT_PREFIX, keeping their document structure."""
    if not prefixes:
        raise ValueError(f"merge_datasets: no inputs for {out_prefix}")
    parts = [IndexedDataset(p) for p in prefixes]
    dtype = parts[0].dtype
    for ds in parts[1:]:
        if ds.dtype != dtype:
            raise IndexedDatasetError(f"{idx_path(ds.prefix)}: dtype {ds.dtype} differs from {dtype} of "
                                      f"{idx_path(parts[0].prefix)}; merge needs one dtype")
    for ds in parts:
        if ds.sequence_modes is not None:
            raise IndexedDatasetError(f"{idx_path(ds.prefix)}: multimodal datasets (sequence modes) cannot be merged")
    lengths = np.concatenate([ds.sequence_lengths for ds in parts]) if parts else np.zeros(0, np.int32)
    docs, base = [np.zeros(1, np.int64)], 0
    for ds in parts:
        docs.append(ds.document_indices[1:] + base)
        base += len(ds)
    make_parent_dir(out_prefix)
    tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp_bin, tmp_idx = bin_path(out_prefix) + tag, idx_path(out_prefix) + tag
    try:
        with open(tmp_bin, "wb") as out:
            for ds in parts:
                with open(bin_path(ds.prefix), "rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        _indexed.write_index(tmp_idx, CODE_OF_DTYPE[dtype], lengths, np.concatenate(docs))
        os.replace(tmp_bin, bin_path(out_prefix))
        os.replace(tmp_idx, idx_path(out_prefix))
    except BaseException:
        for path in (tmp_bin, tmp_idx):
            if os.path.exists(path):
                os.remove(path)
        raise

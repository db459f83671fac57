"""Inputs of the preprocessing program, cut into ordered chunks for the workers.

Two kinds of input:
- JSONL files (plain, `.gz`, `.zst`): one JSON object per line, cut at line ends into chunks of
  about `chunk_bytes`. A plain file is cut into byte ranges that the workers read themselves
  (the main process only finds the line ends at the cuts), so reading scales with the workers
  and no text goes through a pipe; a compressed file is decompressed by the main process and
  its lines sent to the workers. Workers count lines; the main process, which sees chunks in
  order, turns chunk-relative line numbers into file line numbers for the rejects.
- Source trees (a directory): every regular file whose extension is selected is one document,
  in sorted path order; hidden directories (.git, ...) are skipped and symlinks are not followed. A chunk
  is a list of paths; workers read the files themselves, so reading scales with the workers.
"""

from __future__ import annotations

import glob
import gzip
import os
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator, List, Optional, Sequence, Tuple

# Extension -> language, kept as metadata for source-tree documents.
LANGUAGES = {
    ".py": "python", ".pyi": "python", ".ipynb": "jupyter",
    ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp",
    ".cu": "cuda", ".java": "java", ".kt": "kotlin", ".scala": "scala", ".cs": "csharp",
    ".js": "javascript", ".mjs": "javascript", ".jsx": "javascript", ".ts": "typescript", ".tsx": "typescript",
    ".go": "go", ".rs": "rust", ".rb": "ruby", ".php": "php", ".swift": "swift", ".m": "objective-c",
    ".sh": "shell", ".bash": "shell", ".pl": "perl", ".lua": "lua", ".r": "r", ".jl": "julia",
    ".hs": "haskell", ".ml": "ocaml", ".ex": "elixir", ".erl": "erlang", ".clj": "clojure",
    ".sql": "sql", ".html": "html", ".css": "css", ".md": "markdown", ".rst": "restructuredtext",
    ".tex": "tex", ".f90": "fortran", ".dart": "dart", ".zig": "zig", ".toml": "toml", ".yaml": "yaml",
    ".yml": "yaml", ".json": "json", ".cmake": "cmake", ".proto": "protobuf",
}
COMPRESSED = (".gz", ".zst")


@dataclass
class Chunk:
    """One unit of work. `index` orders the output; `disk_bytes` advances the progress bar."""

    index: int
    source: str  # the JSONL file, or the root of the source tree
    kind: str  # "jsonl" or "files"
    data: Optional[bytes] = None  # jsonl: whole lines, or None: read [offset, offset+length) of `source`
    offset: int = 0
    length: int = 0
    files: List[str] = field(default_factory=list)  # files: paths relative to `source`
    disk_bytes: int = 0

    def lines_bytes(self) -> bytes:
        """The chunk's JSONL text (read from the file for a range chunk)."""
        if self.data is not None:
            return self.data
        with open(self.source, "rb") as f:
            f.seek(self.offset)
            return f.read(self.length)


@dataclass
class Input:
    path: str
    kind: str  # "jsonl" or "tree"
    listing: Optional[List[Tuple[str, int]]] = None  # tree: tree_files() of this run, listed once


def resolve_inputs(patterns: Sequence[str]) -> List[Input]:
    """Expand globs; a directory is a source tree, a file is JSONL. Order is kept (globs sorted)."""
    out: List[Input] = []
    for pattern in patterns:
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not paths:
            raise FileNotFoundError(f"--input {pattern}: no file matches")
        for path in paths:
            if os.path.isdir(path):
                out.append(Input(path, "tree"))
            elif os.path.isfile(path):
                out.append(Input(path, "jsonl"))
            else:
                raise FileNotFoundError(f"--input {path}: no such file or directory")
    return out


def open_jsonl(path: str) -> Tuple[BinaryIO, BinaryIO]:
    """(decompressed stream, raw file); the raw file's position measures progress on disk."""
    raw = open(path, "rb")
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    if path.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True), raw
    return raw, raw


def jsonl_chunks(path: str, chunk_bytes: int, start_index: int = 0) -> Iterator[Chunk]:
    """Cut a JSONL file into chunks of whole lines (the last line may lack its newline)."""
    if not path.endswith(COMPRESSED):
        yield from _range_chunks(path, chunk_bytes, start_index)
        return
    stream, raw = open_jsonl(path)
    index, carry, pos = start_index, b"", 0
    try:
        while True:
            try:
                block = stream.read(chunk_bytes)
            except (OSError, EOFError, ValueError) as e:  # corrupt gzip/zstd stream
                raise ValueError(f"{path}: cannot decompress after byte {pos} of the file: {e}") from None
            if not block:
                break
            block = carry + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a chunk: keep reading
                carry = block
                continue
            data, carry = block[:cut], block[cut:]
            disk = raw.tell()
            yield Chunk(index, path, "jsonl", data=data, disk_bytes=disk - pos)
            index, pos = index + 1, disk
        if carry or raw.tell() > pos:
            yield Chunk(index, path, "jsonl", data=carry, disk_bytes=raw.tell() - pos)
    finally:
        stream.close()
        raw.close()


def _range_chunks(path: str, chunk_bytes: int, start_index: int) -> Iterator[Chunk]:
    """Byte ranges of a plain file, each ending just after a newline (or at the end of file)."""
    size = os.path.getsize(path)
    index, start = start_index, 0
    with open(path, "rb") as f:
        while start < size:
            end = min(start + chunk_bytes, size)
            f.seek(end)
            while end < size:  # move the cut to just after the next newline
                block = f.read(1 << 16)
                hit = block.find(b"\n")
                if hit >= 0:
                    end += hit + 1
                    break
                end += len(block)
            yield Chunk(index, path, "jsonl", offset=start, length=end - start, disk_bytes=end - start)
            index, start = index + 1, end


def tree_files(root: str, extensions: Optional[Sequence[str]]) -> List[Tuple[str, int]]:
    """(relative path, size) of the selected regular files under `root`, in path-component order
    (the order of sorting the paths split at "/"): each directory's entries sorted by name,
    subdirectories where their names fall. Hidden directories (.git, ...) and symlinks are
    skipped; unreadable directories are passed over, as os.walk does."""
    wanted = {e.lower() if e.startswith(".") else "." + e.lower() for e in (extensions or LANGUAGES)}
    out: List[Tuple[str, int]] = []

    def walk(directory: str, prefix: str) -> None:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if not entry.name.startswith("."):
                    walk(entry.path, prefix + entry.name + os.sep)
            elif entry.is_file(follow_symlinks=False) and os.path.splitext(entry.name)[1].lower() in wanted:
                out.append((prefix + entry.name, entry.stat(follow_symlinks=False).st_size))

    walk(root, "")
    return out


def listing(inp: Input, extensions: Optional[Sequence[str]]) -> List[Tuple[str, int]]:
    """The tree's files, listed on first use and kept on `inp` for the rest of the run."""
    if inp.listing is None:
        inp.listing = tree_files(inp.path, extensions)
    return inp.listing


def tree_chunks(root: str, files: List[Tuple[str, int]], chunk_bytes: int, start_index: int = 0) -> Iterator[Chunk]:
    """Group files into chunks of about `chunk_bytes` (at most 4096 files each)."""
    index, batch, size = start_index, [], 0
    for rel, nbytes in files:
        batch.append(rel)
        size += nbytes
        if size >= chunk_bytes or len(batch) >= 4096:
            yield Chunk(index, root, "files", files=batch, disk_bytes=size)
            index, batch, size = index + 1, [], 0
    if batch:
        yield Chunk(index, root, "files", files=batch, disk_bytes=size)


def disk_size(inp: Input, extensions: Optional[Sequence[str]]) -> int:
    if inp.kind == "tree":
        return sum(size for _, size in listing(inp, extensions))
    return os.path.getsize(inp.path)


def all_chunks(inputs: Sequence[Input], chunk_bytes: int, extensions: Optional[Sequence[str]]) -> Iterator[Chunk]:
    """Every input's chunks, numbered 0, 1, 2, ... in input order."""
    index = 0
    for inp in inputs:
        if inp.kind == "tree":
            it = tree_chunks(inp.path, listing(inp, extensions), chunk_bytes, index)
        else:
            it = jsonl_chunks(inp.path, chunk_bytes, index)
        for chunk in it:
            yield chunk
            index = chunk.index + 1


def language_of(path: str) -> Optional[str]:
    return LANGUAGES.get(os.path.splitext(path)[1].lower())


__all__ = ["Chunk", "Input", "LANGUAGES", "all_chunks", "disk_size", "jsonl_chunks", "language_of", "listing",
           "resolve_inputs", "tree_chunks", "tree_files"]

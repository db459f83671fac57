"""The experiments' corpus: this interpreter's Python sources, split by file, cut into documents.

    files = select_files(cfg.corpus, seed)      # {"train": [SourceFile], "heldout": [SourceFile]}
    chunks = chunk_source(text, 800, 1600)      # whole top-level blocks of about 800 characters

Sources are the standard library (its own site-packages left out) and this environment's
packages (tools/bench_corpus.py reads the same trees). A file's side is decided by a hash of
(seed, source, relative path) alone, so adding or removing other files never moves a file from
held-out to train; each side takes files in hash order up to its byte budget. Nothing here is
downloaded: the corpus is what this Python has, and `fingerprint` names it in the results.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List

from megacode.experiments.config import CorpusConfig

SIDES = ("train", "heldout")


@dataclass(frozen=True)
class SourceFile:
    source: str
    """`stdlib` or `installed`."""
    relpath: str
    """Path under the source's root (stable across machines with the same packages)."""
    path: str
    """Absolute path on this machine."""
    size: int


def source_roots() -> Dict[str, Path]:
    paths = sysconfig.get_paths()
    return {"stdlib": Path(paths["stdlib"]), "installed": Path(paths["purelib"])}


def _walk(source: str, root: Path) -> Iterator[SourceFile]:
    skip = {"__pycache__"} | ({"site-packages"} if source == "stdlib" else set())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = Path(dirpath) / name
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                yield SourceFile(source, path.relative_to(root).as_posix(), str(path), size)


def file_hash(seed: int, f: SourceFile) -> int:
    """64-bit hash of (seed, source, relative path): the file's side and its place in line."""
    digest = hashlib.sha256(f"{seed}\0{f.source}\0{f.relpath}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def read_source(f: SourceFile, cfg: CorpusConfig) -> str | None:
    """The file's text, or None when it is not UTF-8, empty, or has a line over max_line_chars."""
    try:
        text = Path(f.path).read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    if not text.strip() or max(map(len, text.splitlines()), default=0) > cfg.max_line_chars:
        return None
    return text


def select_files(cfg: CorpusConfig, seed: int) -> Dict[str, List[SourceFile]]:
    """Train and held-out files: every candidate's side from its hash, then each side in hash order
    until its byte budget is reached (files that fail `read_source` are passed over)."""
    roots = source_roots()
    candidates = [f for s in cfg.sources for f in _walk(s, roots[s]) if 0 < f.size <= cfg.max_file_bytes]
    scale = float(1 << 64)
    ranked = sorted(candidates, key=lambda f: (file_hash(seed, f), f.source, f.relpath))
    chosen: Dict[str, List[SourceFile]] = {side: [] for side in SIDES}
    used = dict.fromkeys(SIDES, 0)
    budget = {"train": cfg.train_bytes, "heldout": cfg.heldout_bytes}
    for f in ranked:
        # an independent draw for the side: the low bits of a second hash
        side = "heldout" if file_hash(seed + 1, f) / scale < cfg.heldout_fraction else "train"
        if used[side] >= budget[side]:
            if all(used[s] >= budget[s] for s in SIDES):
                break
            continue
        if read_source(f, cfg) is None:
            continue
        chosen[side].append(f)
        used[side] += f.size
    for side in SIDES:
        if not chosen[side]:
            raise ValueError(f"corpus: no {side} files among {len(candidates)} candidates from {cfg.sources} "
                             f"(max_file_bytes={cfg.max_file_bytes}, heldout_fraction={cfg.heldout_fraction})")
    return chosen


def fingerprint(files: Dict[str, List[SourceFile]]) -> dict:
    """Counts, bytes and a digest of the chosen (side, source, path, size) list."""
    digest = hashlib.sha256()
    for side in SIDES:
        for f in files[side]:
            digest.update(f"{side}\0{f.source}\0{f.relpath}\0{f.size}\n".encode())
    return {"files": {s: len(files[s]) for s in SIDES}, "bytes": {s: sum(f.size for f in files[s]) for s in SIDES},
            "sha256": digest.hexdigest()}


def _top_level_start(line: str, previous: str) -> bool:
    """A line that starts a new top-level block: at column 0, not a comment or a closing bracket,
    after a blank line (so a statement's continuation lines are never split off)."""
    return bool(line) and not line[0].isspace() and line[0] not in "#)]}" and not previous.strip()


def _cut(lines: List[str], limit: int) -> List[List[str]]:
    """Lines in runs of at most `limit` characters, cutting after blank lines where possible."""
    out: List[List[str]] = []
    current: List[str] = []
    size = 0
    for line in lines:
        if current and size + len(line) > limit:
            blank = max((k for k, l in enumerate(current) if not l.strip()), default=-1)
            if blank > 0:  # keep the run up to its last blank line, carry the rest
                out.append(current[:blank + 1])
                current = current[blank + 1:]
            else:
                out.append(current)
                current = []
            size = sum(map(len, current))
        current.append(line)
        size += len(line)
    if current:
        out.append(current)
    return out


def chunk_source(text: str, target: int, limit: int) -> List[str]:
    """`text` as consecutive documents: whole top-level blocks gathered up to about `target`
    characters; a block over `limit` is cut (after blank lines where it can). The documents
    concatenate back to `text`."""
    lines = text.splitlines(keepends=True)
    blocks: List[List[str]] = []
    for k, line in enumerate(lines):
        if not blocks or _top_level_start(line, lines[k - 1] if k else ""):
            blocks.append([])
        blocks[-1].append(line)
    docs: List[str] = []
    current = ""
    for block in blocks:
        for run in (_cut(block, limit) if sum(map(len, block)) > limit else [block]):
            piece = "".join(run)
            if current and len(current) + len(piece) > target:
                docs.append(current)
                current = ""
            current += piece
    if current:
        docs.append(current)
    return docs

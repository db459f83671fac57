"""JSONL files of the self-instruct stages: appended chunk by chunk, read back to resume.

A run can stop at any moment. Appended files are written a whole chunk at a time and flushed;
a last line cut short by a crash is dropped (and cut from the file) when the stage resumes.
Files a stage rewrites as a whole go through a temporary file and a rename.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)


def read_jsonl(path: Path) -> list[dict]:
    """All complete rows; a missing file is empty; a bad line other than a cut-off last one is
    an error naming the file and line."""
    if not path.exists():
        return []
    rows = []
    with open(path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rows.append(json.loads(raw))
        except json.JSONDecodeError as err:
            if number == len(lines):  # no newline after it: a write cut short
                log.warning("%s: dropping the incomplete last line (a previous run stopped while writing)", path)
                break
            raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
    return rows


def repair_tail(path: Path) -> None:
    """Cut an incomplete last line so that appending starts on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        try:
            json.loads(data[cut:])
            handle.write(b"\n")  # complete, only its newline is missing
        except json.JSONDecodeError:
            handle.truncate(cut)


def append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_tail(path)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    os.replace(tmp, path)
    return count


def chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]

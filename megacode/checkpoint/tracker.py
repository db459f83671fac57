"""Where checkpoints live and which one is the latest.

Layout (Megatron-LM's names): `{dir}/iter_0000020/` holds one checkpoint;
`{dir}/latest_checkpointed_iteration.txt` names the newest complete one. The tracker is written
last, atomically (temp file, fsync, rename, fsync of the directory), so a save that dies
half-way never becomes the latest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

TRACKER_NAME = "latest_checkpointed_iteration.txt"


def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"iter_{step:07d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_tracker(root: str | Path, step: int) -> None:
    root = Path(root)
    tmp = root / f".{TRACKER_NAME}.tmp.{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(f"{step}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, root / TRACKER_NAME)
    _fsync_dir(root)


def read_tracker(root: str | Path) -> Optional[int]:
    """The latest complete step, or None when the directory has no checkpoint yet."""
    path = Path(root) / TRACKER_NAME
    if not path.is_file():
        return None
    text = path.read_text().strip()
    try:
        step = int(text)
    except ValueError:
        raise ValueError(f"{path}: expected a step number, found {text!r}") from None
    if not step_dir(root, step).is_dir():
        raise ValueError(f"{path} names step {step} but {step_dir(root, step)} does not exist")
    return step


def list_steps(root: str | Path) -> list[int]:
    root = Path(root)
    if not root.is_dir():
        return []
    steps = []
    for entry in root.iterdir():
        if entry.is_dir() and entry.name.startswith("iter_") and entry.name[5:].isdigit():
            steps.append(int(entry.name[5:]))
    return sorted(steps)

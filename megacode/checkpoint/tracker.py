"""Where checkpoints live and which one is the latest.

Layout (Megatron-LM's names): `{dir}/iter_0000020/` holds one checkpoint;
`{dir}/latest_checkpointed_iteration.txt` names the newest complete one. A save ends with
(1) every rank past a barrier, (2) rank 0 checking that every shard file the torch_dist metadata
names is there at full length, (3) the completion marker `megacode_complete.json` (file list and
sizes), (4) the tracker — each written atomically (temp file, fsync, rename, fsync of the
directory). A save that dies anywhere before (4) never becomes the latest, and a directory that
fails the check is skipped at resume with a warning, falling back to the newest complete one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

TRACKER_NAME = "latest_checkpointed_iteration.txt"
COMPLETE_MARKER = "megacode_complete.json"
DCP_METADATA = ".metadata"  # torch.distributed.checkpoint writes it last, after every shard
MEGATRON_FILES = ("metadata.json", "common.pt")


def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"iter_{step:07d}"


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (fsync of the directory itself)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(directory: Path, name: str, text: str) -> None:
    tmp = directory / f".{name}.tmp.{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, directory / name)
    fsync_dir(directory)


def write_tracker(root: str | Path, step: int) -> None:
    _write_atomic(Path(root), TRACKER_NAME, f"{step}\n")


def check_shards(ckpt_dir: str | Path) -> tuple[Optional[str], dict[str, int]]:
    """(None, {file: size}) when every file the checkpoint needs is present at full length,
    else (what is missing, {}). Reads the torch_dist metadata, not the tensors."""
    ckpt_dir = Path(ckpt_dir)
    for name in MEGATRON_FILES + (DCP_METADATA,):
        if not (ckpt_dir / name).is_file():
            return f"{ckpt_dir / name} is missing", {}
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(ckpt_dir)).read_metadata()
    except Exception as err:  # noqa: BLE001 - a torn metadata file is an incomplete checkpoint
        return f"{ckpt_dir / DCP_METADATA} is unreadable ({type(err).__name__}: {err})", {}
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    sizes = {}
    for name, length in sorted(needed.items()):
        path = ckpt_dir / name
        size = path.stat().st_size if path.is_file() else -1
        if size < length:
            return (f"{path} is missing" if size < 0 else f"{path} holds {size} bytes, the metadata needs {length}"), {}
        sizes[name] = size
    for name in MEGATRON_FILES + (DCP_METADATA,):
        sizes[name] = (ckpt_dir / name).stat().st_size
    return None, sizes


def mark_complete(ckpt_dir: str | Path, step: int, world_size: int, sizes: dict[str, int]) -> None:
    """Rank 0, after check_shards passed and before the tracker moves (tools that write
    checkpoints themselves call check_shards + mark_complete too)."""
    _write_atomic(Path(ckpt_dir), COMPLETE_MARKER,
                  json.dumps({"step": step, "world_size": world_size, "files": sizes}, indent=1) + "\n")


def incomplete_reason(ckpt_dir: str | Path) -> Optional[str]:
    """None when `ckpt_dir` is a complete checkpoint, else why not.

    With a marker: every listed file at its recorded size (cheap: stat only). Without one (a
    checkpoint written by another tool): the full shard check against the torch_dist metadata.
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return f"{ckpt_dir} does not exist"
    marker = ckpt_dir / COMPLETE_MARKER
    if not marker.is_file():
        return check_shards(ckpt_dir)[0]
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError) as err:
        return f"{marker} is unreadable ({err})"
    for name, size in files.items():
        path = ckpt_dir / name
        actual = path.stat().st_size if path.is_file() else -1
        if actual != size:
            return f"{path} is missing" if actual < 0 else f"{path} holds {actual} bytes, the marker says {size}"
    return None


def newest_complete(root: str | Path, below: Optional[int] = None) -> Optional[int]:
    """The highest step (below `below`, if given) whose directory is a complete checkpoint."""
    for step in reversed(list_steps(root)):
        if below is not None and step >= below:
            continue
        reason = incomplete_reason(step_dir(root, step))
        if reason is None:
            return step
        log.warning("skipping incomplete checkpoint %s: %s", step_dir(root, step), reason)
    return None


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


def resolve_load_dir(root: str | Path, step: Optional[int]) -> Optional[Path]:
    """The checkpoint directory for `step`, else the tracker's latest — or, when that one is
    incomplete, the newest complete one (with a warning). None if there is no complete one."""
    if step is not None:
        target = step_dir(root, step)
        reason = incomplete_reason(target)
        if reason is not None:
            raise FileNotFoundError(f"checkpoint step {step} is not usable: {reason}")
        return target
    try:
        latest = read_tracker(root)
    except ValueError as err:  # tracker names a directory that is gone
        log.warning("%s; looking for the newest complete checkpoint instead", err)
        latest = None
    chosen = latest
    if latest is not None:
        reason = incomplete_reason(step_dir(root, latest))
        if reason is not None:
            log.warning("%s names step %d, which is incomplete (%s); falling back to the newest complete "
                        "checkpoint", Path(root) / TRACKER_NAME, latest, reason)
            chosen = None
    if chosen is None:
        chosen = newest_complete(root)
        if chosen is None:
            return None
        if latest is not None or list_steps(root):
            log.warning("resuming from %s", step_dir(root, chosen))
    for newer in (s for s in list_steps(root) if s > chosen):
        log.warning("ignoring %s: %s", step_dir(root, newer),
                    incomplete_reason(step_dir(root, newer)) or "complete but never made the latest")
    return step_dir(root, chosen)

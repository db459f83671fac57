"""Checkpoint retention: keep the newest K complete checkpoints plus every N-th step.

Rank 0 runs it right after the tracker moved to a new checkpoint. Rules, in order:
- the tracker's checkpoint (the latest) is never deleted, nor is any checkpoint when the latest
  is not complete — there must always be one good checkpoint to resume from;
- complete checkpoints: the newest `keep_last` and every step that is a multiple of
  `keep_every` stay, the others go;
- incomplete directories older than the latest are leftovers of saves that died: they go;
  newer ones are left alone (the next save of that step replaces them).
A directory is first renamed to `.trash_iter_XXXXXXX` (atomic), then removed, so a crash during
deletion never leaves a half-deleted `iter_*` that looks like a checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from megacode.checkpoint.tracker import incomplete_reason, list_steps, read_tracker, step_dir

log = logging.getLogger(__name__)

TRASH_PREFIX = ".trash_"


@dataclass
class RetentionPlan:
    keep: list[int] = field(default_factory=list)
    delete_complete: list[int] = field(default_factory=list)
    delete_incomplete: list[int] = field(default_factory=list)


def plan(root: str | Path, keep_last: int, keep_every: int = 0) -> RetentionPlan:
    """What `prune` would do; `keep_last=0` keeps everything."""
    steps = list_steps(root)
    result = RetentionPlan()
    if keep_last <= 0 or not steps:
        result.keep = steps
        return result
    try:
        latest = read_tracker(root)
    except ValueError:
        latest = None
    if latest is None or incomplete_reason(step_dir(root, latest)) is not None:
        result.keep = steps  # no known-good latest: deleting anything could lose the only good one
        return result
    complete = [s for s in steps if s == latest or incomplete_reason(step_dir(root, s)) is None]
    keep = set(complete[-keep_last:]) | {latest}
    if keep_every > 0:
        keep |= {s for s in complete if s % keep_every == 0}
    for step in steps:
        if step in keep or step > latest:  # newer than the latest: a save that is not ours to judge
            result.keep.append(step)
        elif step in complete:
            result.delete_complete.append(step)
        else:
            result.delete_incomplete.append(step)
    return result


def _remove(path: Path) -> None:
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}")
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def prune(root: str | Path, keep_last: int, keep_every: int = 0) -> RetentionPlan:
    """Apply the retention rules under `root` (rank 0 only); returns what was done."""
    root = Path(root)
    for leftover in root.glob(f"{TRASH_PREFIX}iter_*"):  # a deletion that died half-way
        shutil.rmtree(leftover, ignore_errors=True)
    decided = plan(root, keep_last, keep_every)
    for step in decided.delete_complete + decided.delete_incomplete:
        _remove(step_dir(root, step))
    if decided.delete_complete or decided.delete_incomplete:
        log.info("checkpoint retention: removed %s (kept %s)",
                 ", ".join(step_dir(root, s).name for s in sorted(decided.delete_complete + decided.delete_incomplete)),
                 ", ".join(step_dir(root, s).name for s in decided.keep))
    return decided

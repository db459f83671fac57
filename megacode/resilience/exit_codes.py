"""Exit codes of `megacode.train` and the exit-status file that launchers read.

Every rank exits with the same code. Under `srun` without torchrun the job step's status is that
code; torchrun, however, exits 1 whenever a worker exits non-zero, so rank 0 (or, for a peer
failure, the rank that saw it) also writes the code and a one-line reason to the exit-status
file (`fault.exit_status_file`, default `{checkpoint.dir}/exit_status.txt`):

    42
    preempted: SIGUSR1 reached rank 3 at step 1200 (forward-backward); saved iter_0001200

A launch script reads the first line (`read -r code < "$CKPT/exit_status.txt"`). The file is
removed when a run starts, so a stale one never survives a crash that left no status.

| code | meaning                                                                  | requeue? |
|------|--------------------------------------------------------------------------|----------|
| 0    | finished `train.iters` (or `train.exit_interval`)                         | no       |
| 2    | bad config (before any process group)                                    | no       |
| 42   | EXIT_REQUEUE: preemption signal or time budget; a checkpoint was saved    | yes      |
| 43   | EXIT_PEER_FAILURE: a rank died or hung; resume from the last checkpoint   | yes, capped |
| 44   | EXIT_BAD_NUMERICS: too many bad steps in a row; inspect bad_steps.jsonl   | no       |
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

EXIT_OK = 0
EXIT_REQUEUE = 42
"""Stopped on a preemption signal or `train.exit_duration_minutes` after saving: requeue."""
EXIT_PEER_FAILURE = 43
"""A rank died or hung and the watchdog stopped the job; a restart resumes from the last checkpoint."""
EXIT_BAD_NUMERICS = 44
"""`fault.max_bad_in_row` bad steps in a row (or `fault.on_bad_step=stop`); needs a person."""

STATUS_NAME = "exit_status.txt"


def status_path(exit_status_file: Optional[str], checkpoint_dir: Optional[str]) -> Optional[Path]:
    if exit_status_file:
        return Path(exit_status_file)
    if checkpoint_dir:
        return Path(checkpoint_dir) / STATUS_NAME
    return None


def write_status(path: Optional[Path], code: int, reason: str) -> None:
    """Atomically replace `path` with `code\\nreason\\n` (temp file + rename; no partial file)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(f"{code}\n{' '.join(reason.split())}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_status(path: Path) -> Optional[tuple[int, str]]:
    """(code, reason) from an exit-status file, None when there is none."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return None
    return int(lines[0]), (lines[1] if len(lines) > 1 else "")


def clear_status(path: Optional[Path]) -> None:
    if path is not None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass

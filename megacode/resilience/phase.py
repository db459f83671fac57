"""What this rank is doing right now: (step, phase, since when), and where its main thread is.

The training thread sets the phase; the watchdog thread publishes it in heartbeats and signal
handlers quote it, so every message about a fault says what the rank was doing. Assigning one
tuple is atomic under the GIL, so readers never see a step from one phase and a time from another.
"""

from __future__ import annotations

import sys
import threading
import time

STARTUP = "startup"
STEP = "forward-backward"
OPTIMIZER = "optimizer"
EVAL = "eval"
SAVE = "save"
IDLE = "between-steps"
ROLLBACK = "rollback"
DONE = "done"
FAILED = "failed"

# Phases the stall check leaves alone: start-up can legitimately wait long (index building on
# rank 0, a slow filesystem during load) and is bounded by the collective timeout instead.
NO_STALL_CHECK = (STARTUP, DONE, FAILED)

# A main thread whose innermost Python frame is in one of these is blocked waiting for peers (the
# wait itself runs in C++ below that frame), not stuck on its own.
_COMMUNICATION_FILES = ("torch/distributed/", "pipeline_parallel/p2p_communication.py")


class PhaseTracker:
    def __init__(self) -> None:
        self._state = (0, STARTUP, time.monotonic())
        self._main = threading.main_thread().ident
        self.changed = threading.Event()
        """Set on every phase change: the watchdog publishes it without waiting a full interval."""

    def set(self, phase: str, step: int) -> None:
        self._state = (step, phase, time.monotonic())
        self.changed.set()

    def now(self) -> tuple[int, str, float]:
        """(step, phase, seconds in this phase)."""
        step, phase, since = self._state
        return step, phase, time.monotonic() - since

    def where(self) -> tuple[str, bool]:
        """("file:line function" of the main thread's innermost Python frame, whether that frame
        is a collective or point-to-point wait) — read from another thread, main thread running."""
        frame = sys._current_frames().get(self._main)
        if threading.get_ident() == self._main:  # asked by the main thread itself: where it came from
            while frame is not None and "megacode/resilience/" in frame.f_code.co_filename:
                frame = frame.f_back
        if frame is None:
            return "?", False
        path = frame.f_code.co_filename
        waiting = any(marker in path for marker in _COMMUNICATION_FILES)
        return f"{_short(path)}:{frame.f_lineno} {frame.f_code.co_name}", waiting


def _short(path: str) -> str:
    for root in ("site-packages/", "/megacode/"):
        if root in path:
            return ("megacode/" if root == "/megacode/" else "") + path.split(root, 1)[1]
    return path

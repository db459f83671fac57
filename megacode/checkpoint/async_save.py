"""Checkpoints written in the background (`checkpoint.async_save`) and their finalization.

`dist_checkpointing.save(..., async_sharded_save=True)` does the quick part at once — the plan,
`common.pt`, and on GPUs the copy of every shard to host memory — and returns an `AsyncRequest`
whose write function runs in a process forked from the rank (Megatron-Core's
`TemporalAsyncCaller`). The fork is also the snapshot: the writer sees the weights and optimizer
state as they were at the save, whatever the training loop does to them afterwards (on CPU the
tensors are not copied; copy-on-write keeps the writer's view).

Everything after the write is the request's finalization, run by every rank together once every
rank's writer has finished: Megatron's (the torch_dist `.metadata`, `metadata.json`), then
megacode's (barrier, shard check, completion marker, tracker: `dist_ckpt._complete_save`), then
the caller's follow-up (retention). So the tracker never moves before the write finished and was
checked, exactly as for a blocking save.

Deciding that every writer has finished takes a collective (one int all-reduce, Megatron's
`sync_all_async_calls`). `poll()` runs it once per call and only while a save is in flight: the
loop calls it once per step, right after the step's stop decision (itself an all-reduce that
already waited for the device), so a step without a pending save has no extra collective and
one with it pays the latency of one small all-reduce. A write takes a few steps; the tracker
then trails the write by at most one step. `wait()` blocks instead: before the next save, a
rollback, and every exit. At most one save is in flight.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from pathlib import Path
from typing import Callable, Optional

from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue, AsyncRequest

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def _writer_dies_with_rank(write: Callable) -> Callable:
    """The write function, run first thing in the forked writer: die when the rank dies.

    A SIGKILLed rank would otherwise leave its writer running, and the next attempt may save the
    same step into the same directory while the orphan still writes there. (The writer's own
    per-file workers, which Megatron forks, still finish the file in hand, as they do when a
    blocking save's rank dies.)"""
    parent = os.getpid()

    def write_in_child(*args, **kwargs):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # not Linux: the orphan finishes its write and exits
            pass
        if os.getppid() != parent:  # the rank died between fork and prctl
            os._exit(1)
        return write(*args, **kwargs)

    return write_in_child


class BackgroundSave:
    """At most one checkpoint being written in the background on this rank, and its completion.

    Every method is called by all ranks at the same points of the loop (finalization is
    collective)."""

    def __init__(self) -> None:
        self._calls = AsyncCallsQueue(persistent=False)  # a forked writer per save
        self._target: Optional[Path] = None
        self._started = 0.0
        self._on_complete: Optional[Callable[[Path], None]] = None

    @property
    def pending(self) -> Optional[Path]:
        """The checkpoint directory being written, or None."""
        return self._target

    def start(self, request: AsyncRequest, target: Path, finalize: Callable[[], None],
              on_complete: Optional[Callable[[Path], None]] = None) -> None:
        """Fork the writer for `request`; `finalize` (all ranks) runs after Megatron's own
        finalization, `on_complete(target)` after that."""
        if self._target is not None:
            raise RuntimeError(f"checkpoint {self._target} is still being written: wait() before saving again")
        if request.async_fn is not None:
            request = request._replace(async_fn=_writer_dies_with_rank(request.async_fn))
        request.add_finalize_fn(finalize)
        self._started = time.perf_counter()
        self._calls.schedule_async_request(request)
        self._target, self._on_complete = target, on_complete

    def poll(self) -> Optional[Path]:
        """All ranks: complete the pending save if every rank's writer has finished; returns its
        directory when it did. Nothing pending: returns None without any collective."""
        if self._target is None:
            return None
        return self._finalize(blocking=False)

    def wait(self) -> Optional[Path]:
        """All ranks: block until the pending save is written everywhere, then complete it."""
        if self._target is None:
            return None
        return self._finalize(blocking=True)

    def _finalize(self, blocking: bool) -> Optional[Path]:
        # Runs the request's finalize functions (collective) once every writer is done; raises on
        # every rank when a writer failed (Megatron's CheckpointException) or a check failed.
        if not self._calls.maybe_finalize_async_calls(blocking=blocking):
            return None
        target, on_complete = self._target, self._on_complete
        self._target = self._on_complete = None
        log.debug("background save of %s completed %.2f s after it started", target,
                  time.perf_counter() - self._started)
        if on_complete is not None:
            on_complete(target)
        return target

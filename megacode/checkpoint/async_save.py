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

Deciding that every writer has finished needs every rank's answer. Megatron asks with one int
all-reduce and a host read per check (`sync_all_async_calls`); the training loop instead adds
`writing_here()` (1 while this rank's writer runs) to the sum it already all-reduces and reads
once per step (megacode.training.step_stats) and hands the sum to `poll(writers_running)`: 0
completes the save, more returns at once, and neither costs a collective or a host read of its
own. `poll()` without the sum (a step that read no statistics) asks the ranks Megatron's way.
Nothing pending: no collective either way. A write takes a few steps; the tracker then trails
the write by at most one step. `wait()` blocks instead: before the next save, a rollback, and
every exit. At most one save is in flight.
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


def _writer_dies_with_rank(write: Callable, before_write: Optional[Callable[[], None]] = None) -> Callable:
    """The write function, run first thing in the forked writer: die when the rank dies.

    A SIGKILLed rank would otherwise leave its writer running, and the next attempt may save the
    same step into the same directory while the orphan still writes there. (The writer's own
    per-file workers, which Megatron forks, still finish the file in hand, as they do when a
    blocking save's rank dies.) `before_write` runs in the writer first (a test hook)."""
    parent = os.getpid()

    def write_in_child(*args, **kwargs):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # not Linux: the orphan finishes its write and exits
            pass
        if os.getppid() != parent:  # the rank died between fork and prctl
            os._exit(1)
        if before_write is not None:
            before_write()
        return write(*args, **kwargs)

    return write_in_child


class BackgroundSave:
    """At most one checkpoint being written in the background on this rank, and its completion.

    Every method is called by all ranks at the same points of the loop (finalization is
    collective)."""

    def __init__(self, before_write: Optional[Callable[[], None]] = None) -> None:
        """`before_write`: run first in every forked writer (megacode.resilience.inject's hook)."""
        self._calls = AsyncCallsQueue(persistent=False)  # a forked writer per save
        self._before_write = before_write
        self._target: Optional[Path] = None
        self._started = 0.0
        self._on_complete: Optional[Callable[[Path], None]] = None
        self._saves_started = 0
        self._counted_save = 0
        """Which save (`_saves_started` then) the last `writing_here()` looked at."""

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
            request = request._replace(async_fn=_writer_dies_with_rank(request.async_fn, self._before_write))
        request.add_finalize_fn(finalize)
        self._started = time.perf_counter()
        self._calls.schedule_async_request(request)
        self._target, self._on_complete = target, on_complete
        self._saves_started += 1

    def writing_here(self) -> int:
        """1 while this rank's writer of the pending save is still running, else 0 (nothing
        pending, nothing to write here, or written). Every rank calls it at the same point; the
        sum over ranks goes to `poll`."""
        self._counted_save = self._saves_started
        if self._target is None or not self._calls.async_calls:
            return 0
        # Megatron's TemporalAsyncCaller keeps the forked writer as `.process` (None when this
        # rank had nothing to write); its own check reads the same `is_alive()`.
        writer = self._calls.async_calls[0].async_caller.process
        return int(writer is not None and writer.is_alive())

    def poll(self, writers_running: Optional[int] = None) -> Optional[Path]:
        """All ranks: complete the pending save if every rank's writer has finished; returns its
        directory when it did. `writers_running`: `writing_here()` summed over the ranks since
        the save started — 0 completes it without a collective to decide, more returns None;
        a sum taken before this save started returns None (the next one counts it). None: one
        small all-reduce asks the ranks. Nothing pending: returns None without any collective."""
        if self._target is None:
            return None
        if writers_running is None:
            return self._finalize(blocking=False)
        if writers_running > 0 or self._counted_save != self._saves_started:
            return None
        return self._finalize(blocking=True, no_dist=True)  # every writer has exited: join, finalize

    def wait(self) -> Optional[Path]:
        """All ranks: block until the pending save is written everywhere, then complete it."""
        if self._target is None:
            return None
        return self._finalize(blocking=True)

    def _finalize(self, blocking: bool, no_dist: bool = False) -> Optional[Path]:
        # Runs the request's finalize functions (collective) once every writer is done; raises on
        # every rank when a writer failed (Megatron's CheckpointException) or a check failed.
        # no_dist: the caller knows every rank's writer has exited; only this rank's is joined.
        if not self._calls.maybe_finalize_async_calls(blocking=blocking, no_dist=no_dist):
            return None
        target, on_complete = self._target, self._on_complete
        self._target = self._on_complete = None
        log.debug("background save of %s completed %.2f s after it started", target,
                  time.perf_counter() - self._started)
        if on_complete is not None:
            on_complete(target)
        return target

"""Preemption: signals and the time budget become one stop decision that every rank shares.

A signal handler only records the signal; every training step carries each rank's vote (signal
received, time budget spent) in the all-reduce of its statistics (megacode.training.step_stats),
because SLURM or a launcher may signal only some ranks, and a rank that stops alone would leave
the others blocked in the next collective. The loop reads the summed votes at the end of the
step: on "stop" every rank saves and exits with EXIT_REQUEUE. A vote is taken as the step's
optimizer phase begins, so a signal that lands later in a step is acted on after the next one.
Later signals are acknowledged and ignored, so a second SIGTERM during the save does not cut it
short (SIGKILL cannot be caught: the tracker protocol covers that case).

Heavy imports stay inside functions: a spawned helper process imports this module by name.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import threading
import time
from typing import Optional

from megacode.resilience.exit_codes import EXIT_REQUEUE
from megacode.resilience.phase import FAILED, PhaseTracker

PR_SET_PDEATHSIG = 1


class StopSignals:
    """Records preemption signals for the training loop; never exits on its own."""

    def __init__(self, names: list[str], tracker: PhaseTracker, rank: int):
        self.rank = rank
        self.tracker = tracker
        self.received: list[dict] = []
        self._pid = os.getpid()
        self._previous: dict[int, object] = {}
        for name in names:
            signum = getattr(signal, name)
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if os.getpid() != self._pid:
            return  # a checkpoint writer forked from this rank inherited the handler: keep writing
        step, phase, _ = self.tracker.now()
        name = signal.Signals(signum).name
        self.received.append({"signal": name, "step": step, "phase": phase, "time": time.time()})
        if phase == FAILED:
            text = f"[rank{self.rank}] megacode: {name} at step {step} while failing: ignored\n"
        elif len(self.received) == 1:
            text = (f"[rank{self.rank}] megacode: {name} at step {step} ({phase}): finishing the step, "
                    f"then saving a checkpoint and exiting with {EXIT_REQUEUE}\n")
        else:
            text = f"[rank{self.rank}] megacode: {name} again at step {step} ({phase}): already stopping, ignored\n"
        # os.write, not logging: the handler may interrupt the main thread inside a logging call.
        os.write(2, text.encode())

    @property
    def requested(self) -> bool:
        return bool(self.received)

    def reset(self) -> None:
        self.received.clear()

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


class TimeBudget:
    """`train.exit_duration_minutes`, counted from this process's start (start-up included)."""

    def __init__(self, minutes: float):
        import psutil

        self.limit_s = minutes * 60.0
        self.start = psutil.Process().create_time()

    def expired(self) -> bool:
        return self.limit_s > 0 and time.time() - self.start >= self.limit_s

    def elapsed_minutes(self) -> float:
        return (time.time() - self.start) / 60.0


def stop_flags(signals: Optional[StopSignals], budget: TimeBudget, rank: int) -> list[int]:
    """This rank's vote: [signalled, rank+1 if signalled else 0, budget exceeded]. Summed over all
    ranks (in the training step's one statistics all-reduce, megacode.training.step_stats, or in
    `agree_to_stop`'s own), they are what `decide_stop` reads."""
    signalled = signals is not None and signals.requested
    return [int(signalled), rank + 1 if signalled else 0, int(budget.expired())]


def decide_stop(summed: list[int], signals: Optional[StopSignals], budget: TimeBudget, rank: int) -> Optional[str]:
    """None to go on, or why every rank stops now (rank 0's text goes to the status file);
    the same on every rank, since every rank sees the same sums."""
    count, rank_sum, over_time = summed
    if count:
        if signals is not None and signals.requested:
            first = signals.received[0]
            what = f"{first['signal']} reached rank {rank} at step {first['step']} ({first['phase']})"
        elif count == 1:
            what = f"a preemption signal reached rank {rank_sum - 1}"
        else:
            what = f"a preemption signal reached {count} ranks"
        return f"preempted: {what}"
    if over_time:
        return (f"time budget: train.exit_duration_minutes={budget.limit_s / 60:g} reached "
                f"after {budget.elapsed_minutes():.1f} min")
    return None


def agree_to_stop(signals: Optional[StopSignals], budget: TimeBudget, rank: int, device) -> Optional[str]:
    """All ranks, where no training step carried the vote (a step a rollback dropped): one
    all-reduce (SUM) of `stop_flags` and a host read of its own."""
    import torch
    import torch.distributed as dist

    flags = torch.tensor(stop_flags(signals, budget, rank), dtype=torch.int64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flags)
    return decide_stop([int(v) for v in flags.tolist()], signals, budget, rank)


def _writer_manager_init(signal_numbers: list[int]) -> None:
    """Runs first in dist_checkpointing's results-queue server (a spawned process)."""
    for signum in signal_numbers:
        signal.signal(signum, signal.SIG_IGN)
    try:  # die with the rank that owns it, also when that rank is SIGKILLed (Linux)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def protect_checkpoint_writer(signal_names: list[str]) -> None:
    """Start dist_checkpointing's writer-results queue now, in a server that ignores `signal_names`.

    Megatron creates it lazily at the first save as a `spawn` Manager. Launchers signal a rank's
    whole process group (torchrun's `killpg`; SLURM), so a SIGTERM that the rank itself handles
    would kill that server and with it the very save the signal asked for. Created here, it
    ignores the preemption signals and dies with its rank (PR_SET_PDEATHSIG) instead of lingering.
    """
    from multiprocessing.managers import SyncManager

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if getattr(filesystem_async, "_results_queue", "missing") is not None:
        return  # already created, or a Megatron-Core without this hook: leave it alone
    import torch

    # Megatron spawns it so that no CUDA state (nor NCCL's threads) is forked. Without CUDA a fork
    # is just as safe and inherits the imported torch the server needs.
    forkable = not torch.cuda.is_available()
    manager = SyncManager(ctx=mp.get_context("fork" if forkable else "spawn"))
    manager.start(initializer=_writer_manager_init,
                  initargs=([int(getattr(signal, name)) for name in signal_names],))
    filesystem_async._results_queue = manager.Queue()  # the proxy keeps the manager alive
    if not forkable:
        # The server unpickles what it queues: the first save's write results make a spawned one
        # import torch (seconds, at a moment a preempted job cannot spare). Pay that now, in the
        # background, through a queue of its own so no save can ever receive the warm-up item.
        threading.Thread(target=_warm_up, args=(manager.Queue(),), name="megacode-ckpt-warmup",
                         daemon=True).start()


def _warm_up(queue) -> None:
    from torch.distributed.checkpoint.metadata import MetadataIndex

    try:
        queue.put(MetadataIndex("warm-up"))
        queue.get()
    except Exception:  # noqa: BLE001 - an optimisation only; the first save pays instead
        pass

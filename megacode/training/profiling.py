"""`logging.profile`: a torch.profiler trace of chosen training steps on chosen ranks, and on CUDA
a memory snapshot of the same steps.

    logging.profile: {start_step: 20, end_step: 22, ranks: [0, 3]}

The trace starts as step `start_step` begins and stops when step `end_step` has finished; each
step is a `ProfilerStep#<step>` range (from its start to the next step's start, so the loop's
logging counts with the step before it). Rank R writes `rank{R}_steps{A}-{B}.pt.trace.json`
(Chrome trace JSON) into `logging.profile.dir`, default `{logging.dir}/profile`:

- TensorBoard: `tensorboard --logdir {logging.dir}` with the `torch-tb-profiler` plugin installed
  shows it under the PYTORCH_PROFILER tab (run "profile", one worker per rank);
- chrome://tracing or https://ui.perfetto.dev open the file as it is.

On CUDA the CUDA kernels are traced too, and `rank{R}_steps{A}-{B}.memory.pickle` holds the
allocator's history over those steps (`torch.cuda.memory._record_memory_history`): drop it on
https://pytorch.org/memory_viz. Without CUDA nothing here touches torch.cuda.
A run that ends inside the window (time budget, preemption) writes no trace.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Optional

import torch

from megacode.config.schema import LoggingConfig

log = logging.getLogger("megacode")

MEMORY_HISTORY_ENTRIES = 100_000
"""Allocator events kept for the snapshot (the newest ones); about 100 MB of host memory at most."""


class StepProfiler:
    """Drives one torch.profiler over steps [start, end]; `step(n)` wraps training step n."""

    def __init__(self, start: int, end: int, out_dir: Path, rank: int, on_cuda: bool):
        self.start, self.end, self.rank, self.on_cuda = start, end, rank, on_cuda
        self.out_dir = Path(out_dir)
        self.name = f"rank{rank}_steps{start}-{end}"
        self.profiler: Optional[torch.profiler.profile] = None
        self.written: list[Path] = []

    @classmethod
    def from_config(cls, cfg: LoggingConfig, rank: int, device: torch.device) -> Optional["StepProfiler"]:
        """None when profiling is off or this rank is not listed."""
        profile = cfg.profile
        if not profile.enabled or rank not in profile.ranks:
            return None
        out_dir = Path(profile.dir) if profile.dir else Path(cfg.dir) / "profile"
        return cls(profile.start_step, profile.end_step, out_dir, rank, device.type == "cuda")

    @contextlib.contextmanager
    def step(self, step: int):
        if step == self.start:
            self._begin()
        elif self.profiler is not None:
            self.profiler.step()  # closes ProfilerStep#(step-1), opens ProfilerStep#step
        try:
            yield
        finally:
            if step >= self.end and self.profiler is not None:
                self._finish()

    def _begin(self) -> None:
        from torch.profiler import ProfilerAction, ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.on_cuda else [])
        # An always-recording schedule: only with a schedule does the profiler mark steps.
        self.profiler = profile(activities=activities, schedule=lambda _: ProfilerAction.RECORD,
                                record_shapes=True, profile_memory=True)
        self.profiler.step_num = self.start  # ProfilerStep#N carries the training step number
        if self.on_cuda:
            torch.cuda.memory._record_memory_history(max_entries=MEMORY_HISTORY_ENTRIES)
        self.profiler.start()
        log.info("profiling steps %d-%d on rank %d into %s", self.start, self.end, self.rank, self.out_dir)

    def _finish(self) -> None:
        profiler, self.profiler = self.profiler, None
        profiler.stop()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        trace = self.out_dir / f"{self.name}.pt.trace.json"
        profiler.export_chrome_trace(str(trace))
        self.written.append(trace)
        if self.on_cuda:
            snapshot = self.out_dir / f"{self.name}.memory.pickle"
            torch.cuda.memory._dump_snapshot(str(snapshot))
            torch.cuda.memory._record_memory_history(enabled=None)
            self.written.append(snapshot)
        say = log.info if self.rank == 0 else log.warning  # other ranks print warnings only
        say("rank %d: profile of steps %d-%d written: %s", self.rank, self.start, self.end,
            ", ".join(str(p) for p in self.written))


def step_context(profiler: Optional[StepProfiler], step: int):
    """What the loop wraps a step in: the profiler's context, or nothing."""
    return profiler.step(step) if profiler is not None else contextlib.nullcontext()

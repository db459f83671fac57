"""The one object the training loop talks to about faults.

`FaultControl.start(cfg)` (once per process, after the process group exists) installs the
preemption signal handlers, starts the checkpoint writer's helper process shielded from them,
starts the watchdog thread and clears a stale exit-status file. The loop then reports its phase,
gives every step this rank's stop vote and asks after it whether all ranks agree to stop, hands
over bad steps, and finally reads `exit_code`. `FaultControl.passive(cfg)` does none of the
process-level parts (no handlers, no thread) for callers that drive steps themselves.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

from megacode.resilience import badsteps, inject
from megacode.resilience.exit_codes import (EXIT_BAD_NUMERICS, EXIT_OK, EXIT_PEER_FAILURE, clear_status,
                                            status_path, write_status)
from megacode.resilience.phase import FAILED, ROLLBACK, PhaseTracker
from megacode.resilience.preemption import (StopSignals, TimeBudget, agree_to_stop, decide_stop,
                                            protect_checkpoint_writer, stop_flags)

log = logging.getLogger("megacode")

BAD_STEPS_NAME = "bad_steps.jsonl"


class FaultControl:
    def __init__(self, cfg, active: bool):
        import torch.distributed as dist

        fault = cfg.fault
        self.cfg = cfg
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.tracker = PhaseTracker()
        self.status_file = status_path(fault.exit_status_file, cfg.checkpoint.dir)
        self.bad_steps_file = (Path(fault.bad_steps_file) if fault.bad_steps_file else
                               Path(cfg.checkpoint.dir) / BAD_STEPS_NAME if cfg.checkpoint.dir else None)
        self.budget = TimeBudget(cfg.train.exit_duration_minutes)
        self.signals: Optional[StopSignals] = None
        self.watchdog = None
        self.exit_code = EXIT_OK
        self.exit_reason = ""
        if not active:
            return
        self.signals = StopSignals(fault.preempt_signals, self.tracker, self.rank)
        protect_checkpoint_writer(fault.preempt_signals)
        if self.rank == 0:
            clear_status(self.status_file)
        if self.world > 1 and fault.heartbeat_interval_s > 0:
            from megacode.resilience.watchdog import Watchdog

            self.watchdog = Watchdog(self.tracker, self.rank, self.world, fault.heartbeat_interval_s,
                                     fault.heartbeat_timeout_s, fault.stall_timeout_s, self._abort)
            self.watchdog.start()

    @classmethod
    def start(cls, cfg) -> "FaultControl":
        return cls(cfg, active=True)

    @classmethod
    def passive(cls, cfg) -> "FaultControl":
        return cls(cfg, active=False)

    # ---- what the loop reports and asks ------------------------------------------------------
    def phase(self, name: str, step: int) -> None:
        self.tracker.set(name, step)
        inject.on_phase(self.rank, step, name)

    def stop_flags(self) -> list[int]:
        """This rank's stop vote, for the step's statistics all-reduce."""
        return stop_flags(self.signals, self.budget, self.rank)

    def stop_reason(self, device, summed: Optional[list] = None) -> Optional[str]:
        """All ranks, at a step boundary: why every rank stops now, or None. `summed`: the votes
        the step's statistics carried (summed over ranks); without them, an all-reduce of its own."""
        if summed is None:
            return agree_to_stop(self.signals, self.budget, self.rank, device)
        return decide_stop(summed, self.signals, self.budget, self.rank)

    def finish(self, code: int, reason: str) -> None:
        """Record how this run ends; rank 0 writes the exit-status file for the launcher."""
        self.exit_code, self.exit_reason = code, reason
        if self.rank == 0:
            write_status(self.status_file, code, reason)
            (log.info if code == EXIT_OK else log.warning)("exit %d: %s", code, reason)

    # ---- bad steps ---------------------------------------------------------------------------
    def bad_step(self, run, result, losses: list) -> str:
        """All ranks, after a step whose update was withheld: log it, then "skip" (go on),
        "rollback" (run.state now the latest checkpoint's) or "stop" (exit code set)."""
        fault = self.cfg.fault
        guard = run.guard
        consumed = run.state.consumed_train_samples - run.layout.global_batch_size
        record = badsteps.describe(result.step, consumed, run.layout, losses, run.train_data, result.problems,
                                   result.loss, result.grad_norm, run.device)
        action = fault.on_bad_step
        if action == "stop" or guard.bad_in_row >= fault.max_bad_in_row:
            action = "stop"
        target = None
        if action == "rollback":
            from megacode.checkpoint.dist_ckpt import resolve_load_dir

            target = resolve_load_dir(self.cfg.checkpoint.dir, None) if self.cfg.checkpoint.dir else None
            if target is None:
                action = "skip"  # nothing saved yet to roll back to
        record.update(action=action, bad_in_row=guard.bad_in_row, bad_total=guard.bad_total,
                      rollback_to=str(target) if target else None)
        if self.rank == 0:
            log.warning("bad %s -> %s (%d bad in a row, %d in all)%s", badsteps.summary(record), action,
                        guard.bad_in_row, guard.bad_total,
                        f"; details in {self.bad_steps_file}" if self.bad_steps_file else "")
            badsteps.write(self.bad_steps_file, record)
        if action == "rollback":
            self._rollback(run, target, consumed)
        elif action == "stop":
            self.finish(EXIT_BAD_NUMERICS,
                        f"bad numerics: {guard.bad_in_row} bad step(s) in a row, the last at step {result.step} "
                        f"({', '.join(result.problems)}), samples [{consumed}, "
                        f"{consumed + run.layout.global_batch_size}); see {self.bad_steps_file or 'the log'}")
        return action

    def _rollback(self, run, target: Path, start: int) -> None:
        from megacode.checkpoint.dist_ckpt import load_checkpoint

        self.phase(ROLLBACK, run.state.step)
        guard = run.guard
        run.state = load_checkpoint(target, run.model, run.optimizer, run.scheduler, run.layout, run.cfg.to_dict())
        guard.load_state_dict(run.state.extra.get("numerics"))
        guard.drop(start, start + run.layout.global_batch_size)
        if self.rank == 0:
            log.warning("rolled back to %s (step %d); samples [%d, %d) are dropped from the data stream",
                        target, run.state.step, start, start + run.layout.global_batch_size)

    # ---- failures ----------------------------------------------------------------------------
    def on_exception(self, err: BaseException) -> None:
        """Main thread, when training raised. Returns (the caller re-raises: this rank's own
        failure), or exits with EXIT_PEER_FAILURE when the evidence names a peer."""
        step, _, _ = self.tracker.now()
        self.tracker.set(FAILED, step)
        if self.watchdog is None:
            return
        from megacode.resilience.watchdog import is_communication_error

        try:
            if not is_communication_error(err):
                self.watchdog.publish_failure(err)  # peers name this rank and its error
                return
            verdict = self.watchdog.diagnose(err)
        except Exception:  # noqa: BLE001 - the store is gone too; the original error says more
            return
        if verdict is not None:
            self._abort(verdict, True)

    def _abort(self, message: str, first: bool) -> None:
        """Watchdog verdict: say it, record it, end this process and its helpers now."""
        os.write(2, f"[rank{self.rank}] megacode: {message}\n".encode())
        if first:
            try:
                write_status(self.status_file, EXIT_PEER_FAILURE, message)
            except OSError:
                pass
        _kill_children()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(EXIT_PEER_FAILURE)

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.signals is not None:
            self.signals.restore()


def _kill_children() -> None:
    """This rank's own helpers (checkpoint writer processes); they would outlive os._exit."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass

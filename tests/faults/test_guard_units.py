"""Unit checks of the numerics guard, the fault config and the exit-status file (no processes)."""

import math
import re

import pytest

from megacode.config import ConfigError, load_config
from megacode.config.schema import FaultConfig
from megacode.resilience.exit_codes import EXIT_REQUEUE, clear_status, read_status, write_status
from megacode.resilience.numerics import NumericsGuard
from megacode.resilience.watchdog import explain, is_communication_error


def test_nan_and_inf_are_bad_whatever_the_history():
    guard = NumericsGuard(FaultConfig())
    assert guard.problems(math.nan, 1.0) == ["loss nan"]
    assert guard.problems(2.0, math.inf) == ["grad norm inf"]
    assert guard.problems(2.0, 1.0) == []


def test_spikes_are_judged_against_a_full_window_of_good_steps():
    guard = NumericsGuard(FaultConfig(loss_spike_factor=2.0, grad_norm_spike_factor=3.0, spike_window=3))
    guard.record(1, 1.0, 1.0, bad=False)
    guard.record(2, 1.0, 1.0, bad=False)
    assert guard.problems(10.0, 10.0) == []  # window not full yet
    guard.record(3, 1.0, 1.0, bad=False)
    assert guard.problems(2.5, 2.0)[0].startswith("loss spike 2.5 > 2 x recent mean 1")
    assert guard.problems(1.5, 3.5)[0].startswith("grad norm spike")
    guard.record(4, 2.5, 2.0, bad=True)  # a bad value never enters the window
    assert list(guard.losses) == [1.0, 1.0, 1.0]


def test_bad_in_a_row_counts_replays_after_a_rollback_as_no_progress():
    guard = NumericsGuard(FaultConfig())
    guard.record(5, 1.0, 1.0, bad=True)
    guard.record(4, 1.0, 1.0, bad=False)  # replayed after rolling back: not a new good step
    assert guard.bad_in_row == 1
    guard.record(6, 1.0, 1.0, bad=False)
    assert guard.bad_in_row == 0 and guard.bad_total == 1


def test_guard_state_survives_a_checkpoint():
    guard = NumericsGuard(FaultConfig(spike_window=2))
    for step in (1, 2, 3):
        guard.record(step, float(step), 0.5, bad=False)
    guard.drop(32, 48)
    restored = NumericsGuard(FaultConfig(spike_window=2))
    restored.load_state_dict(guard.state_dict())
    assert list(restored.losses) == [2.0, 3.0] and restored.is_dropped(40) and not restored.is_dropped(48)


@pytest.mark.parametrize("override, words", [
    ("fault.on_bad_step=retry", "fault.on_bad_step must be one of skip, rollback, stop, got 'retry'"),
    ("fault.preempt_signals=[SIGKILL]", "got 'SIGKILL'"),
    ("fault.heartbeat_timeout_s=1", "at least twice heartbeat_interval_s, got 1.0 and 5.0"),
    ("fault.loss_spike_factor=0.5", "got 0.5"),
    ("train.exit_duration_minutes=-1", "train.exit_duration_minutes must be >= 0, got -1.0"),
    ("checkpoint.keep_every=-2", "got -2"),
])
def test_bad_fault_config_names_the_value(override, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(None, [override])


def test_exit_status_file_round_trip(tmp_path):
    path = tmp_path / "exit_status.txt"
    write_status(path, EXIT_REQUEUE, "preempted: SIGTERM\nat step 3")
    assert path.read_text() == "42\npreempted: SIGTERM at step 3\n"
    assert read_status(path) == (42, "preempted: SIGTERM at step 3")
    clear_status(path)
    assert read_status(path) is None


def test_verdicts_name_rank_step_phase_and_place():
    beat = {"seq": 3, "step": 7, "phase": "forward-backward", "age": 1.0, "where": "x.py:1 f", "waiting": True,
            "host": "h", "pid": 11, "time": 0.0}
    text = explain({0: {**beat, "time": 1e12}, 1: beat}, {1: "silent"}, 3.0)
    assert text.startswith("rank 1 (host h, pid 11) is dead or frozen") and "at step 7 in forward-backward" in text
    hung = explain({0: beat, 1: {**beat, "waiting": False, "phase": "optimizer", "where": "y.py:2 g"}}, {}, 3.0,
                   stalled=True)
    assert hung == "rank 1 is hung at step 7 in optimizer (1 s), at y.py:2 g, while rank(s) 0 wait for it in a collective"
    assert is_communication_error(RuntimeError("[gloo] Connection closed by peer [127.0.0.1]:1234"))
    assert not is_communication_error(ValueError("shapes do not match"))


def test_stop_votes_summed_over_ranks_name_who_was_signalled():
    from megacode.resilience.phase import PhaseTracker
    from megacode.resilience.preemption import StopSignals, TimeBudget, decide_stop, stop_flags

    budget = TimeBudget(0.0)
    assert stop_flags(None, budget, 3) == [0, 0, 0] and decide_stop([0, 0, 0], None, budget, 0) is None
    signals = StopSignals([], PhaseTracker(), rank=2)  # no handlers installed: record a receipt by hand
    signals.received.append({"signal": "SIGTERM", "step": 7, "phase": "optimizer", "time": 0.0})
    mine = stop_flags(signals, budget, 2)
    assert mine == [1, 3, 0]
    assert decide_stop(mine, signals, budget, 2) == "preempted: SIGTERM reached rank 2 at step 7 (optimizer)"
    # Rank 0 was not signalled: one signalled rank is named from the sum of (rank + 1) ...
    assert decide_stop([1, 3, 0], None, budget, 0) == "preempted: a preemption signal reached rank 2"
    # ... several are counted.
    assert decide_stop([2, 5, 0], None, budget, 0) == "preempted: a preemption signal reached 2 ranks"
    assert decide_stop([0, 0, 1], None, TimeBudget(0.5), 0).startswith("time budget: train.exit_duration_minutes=0.5")

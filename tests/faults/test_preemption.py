"""SIGTERM at seeded random points of consecutive runs (20 at 2 ranks, 2 at 4 ranks per repeat; every
other run with asynchronous saves): every run saves a complete latest checkpoint and exits with
the requeue code, and the runs resumed one after another give exactly the losses of one
uninterrupted run."""

from megacode.resilience.exit_codes import EXIT_REQUEUE

SCENARIO = "preempt"
STEP_PHASES = {"forward-backward", "optimizer", "between-steps"}


def _segments(scenario):
    for chain in scenario["chains"]:
        for index, segment in enumerate(chain["segments"]):
            yield chain, index, segment


def test_every_signalled_run_saves_and_exits_with_the_requeue_code(scenario):
    count = 0
    for chain, index, seg in _segments(scenario):
        where = f"{chain['layout']} run {index} ({seg['plan']})\n{seg['log_tail']}"
        assert set(seg["codes"].values()) == {EXIT_REQUEUE}, where
        code, reason = seg["status"]
        assert code == EXIT_REQUEUE and reason.startswith("preempted"), where
        assert seg["incomplete"] is None, where
        assert seg["steps"], where
        last = seg["steps"][-1][0]
        assert seg["tracker_after"] == last and f"saved iter_{last:07d}" in reason, where
        count += 1
    assert count == sum(len(c["segments"]) for c in scenario["chains"]) >= 22
    assert {seg["async"] for _, _, seg in _segments(scenario)} == {False, True}


def test_a_signal_to_one_rank_stops_every_rank(scenario):
    single = [(c, s) for c, _, s in _segments(scenario) if len(s["plan"]["ranks"]) == 1]
    assert single
    for chain, seg in single:
        rank = seg["plan"]["ranks"][0]
        assert f"rank {rank}" in seg["status"][1], seg["status"]
        assert set(seg["codes"].values()) == {EXIT_REQUEUE}


def test_each_run_resumes_where_the_previous_one_saved(scenario):
    for chain in scenario["chains"]:
        previous = 0
        for seg in chain["segments"]:
            assert seg["tracker_before"] == previous
            assert seg["steps"][0][0] == previous + 1, (previous, seg["steps"][:2])
            previous = seg["tracker_after"]


def test_interrupted_runs_give_the_uninterrupted_losses(scenario):
    for chain in scenario["chains"]:
        done = [tuple(step) for seg in chain["segments"] for step in seg["steps"]]
        reference = [tuple(step) for step in chain["reference"]]
        assert [s[0] for s in done] == list(range(1, len(done) + 1))  # every step exactly once
        assert done == reference[:len(done)]  # bit for bit: loss and grad norm
        assert done[-1][1] < done[0][1]


def test_signals_landed_inside_steps_and_inside_saves(scenario):
    receipts = [r for _, _, seg in _segments(scenario) for r in seg["receipts"]]
    phases = {r["phase"] for r in receipts if not r["again"]}
    assert "save" in phases and phases & STEP_PHASES, phases
    assert any(r["again"] for r in receipts), "no run got a second signal while stopping"
    assert any(seg["plan"]["group"] for _, _, seg in _segments(scenario)), "no process-group signal"


def test_time_budget_saves_and_exits_with_the_requeue_code(scenario):
    budget = scenario["budget"]
    assert set(budget["codes"].values()) == {EXIT_REQUEUE}, budget["log_tail"]
    code, reason = budget["status"]
    assert code == EXIT_REQUEUE and reason.startswith("time budget"), reason
    assert budget["steps"] == [1] and budget["tracker"] == 1

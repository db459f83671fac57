"""SIGKILL during checkpoint saves, blocking and asynchronous, 12 times per repeat, at every point of
a save: the latest pointer only ever names complete checkpoints, retention never loses the good
one, and the run that finally completes (asynchronous saves) matches an uninterrupted one."""

from tests.faults.sc_saves import PLAN

SCENARIO = "saves"


def test_latest_pointer_always_names_a_complete_checkpoint(scenario):
    assert scenario["tracker_reads"] > 100  # the watcher really looked, all through the kills
    assert scenario["violations"] == []
    for kill in scenario["kills"]:
        if kill["tracker_after"] is not None:
            assert kill["incomplete"] is None, kill


def test_every_kill_hit_a_save(scenario):
    kills = scenario["kills"]
    assert len(kills) >= len(PLAN) == 12
    done = {(k["async"], k["point"]) for k in kills}
    assert done >= set(PLAN), done
    assert {p for a, p in done if a} >= {"scheduled", "writing", "written", "tracked"}
    for kill in kills:
        assert -9 in kill["codes"].values(), kill  # somebody was SIGKILLed, not a clean exit
        assert 0 not in kill["codes"].values(), kill
    for kill in kills:
        if kill["point"] == "writing":  # killed with shard files on disk but no metadata yet (async:
            # the writer in flight, or done but not yet finalized)
            assert kill["seen"]["dir"] is not None and any(f.endswith(".distcp") for f in kill["seen"]["files"]), kill


def test_the_latest_pointer_moves_only_for_completed_saves(scenario):
    for kill in scenario["kills"]:
        after, before = kill["tracker_after"], kill["tracker_before"]
        if kill["point"] == "tracked":  # killed after the pointer moved: that save counts
            assert after == kill["step"], kill
        elif kill["point"] in ("begin", "scheduled"):  # the save in flight never became the latest
            assert after is None or after < kill["step"], kill
        elif kill["point"] == "writing":
            seen = kill["seen"]["dir"]
            assert seen is not None and (after is None or after < int(seen[5:])), kill


def test_run_after_the_kills_resumes_and_matches_an_uninterrupted_one(scenario):
    assert set(scenario["final_codes"].values()) == {0}, scenario["final_log"]
    final = [tuple(s) for s in scenario["final"]]
    reference = {s[0]: tuple(s) for s in scenario["reference"]}
    assert final and all(step == reference[step[0]] for step in final)


def test_retention_keeps_the_last_two(scenario):
    last = scenario["final"][-1][0]
    assert scenario["dirs"] == [f"iter_{last - 1:07d}", f"iter_{last:07d}"]


def test_the_exit_waits_for_the_last_asynchronous_save(scenario):
    # the final run saves asynchronously after every step: it exits only once the last one is
    # written, checked and tracked (and retention, which runs after that, removed the one before)
    last = scenario["final"][-1][0]
    assert scenario["final_tracker"] == last
    assert "written in the background" in scenario["final_log"]

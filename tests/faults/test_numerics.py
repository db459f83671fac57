"""Planted NaN, Inf and spike losses at DP2 on a real corpus: skipped (or rolled back) per the policy,
logged with the data position and documents, and K in a row stop the run.

"Skip" is defined without the skip machinery: the run must equal an unpoisoned run on the same
data stream with the poisoned global batches cut out (step s of the skipping run after k skips is
step s - k of that run)."""

from megacode.resilience.exit_codes import EXIT_BAD_NUMERICS

SCENARIO = "numerics"


def _by_step(steps):
    return {s[0]: tuple(s[:3]) for s in steps}


def test_a_skipped_step_leaves_weights_and_optimizer_state_exactly_as_they_were(scenario):
    watch = scenario["skip"]["watch"]
    assert len(watch) == 2  # both DP ranks, each with its own optimizer shard
    for rank in watch:
        assert rank["skipped"] and rank["compared"] > 50
        assert rank["changed"] == []
        before, after = rank["scheduler_steps"]
        assert before == after  # the LR schedule did not advance
        assert rank["consumed"][1] == rank["consumed"][0] + scenario["config"]["global_batch"]


def test_skipping_equals_training_without_the_bad_batches(scenario):
    cfg = scenario["config"]
    nan, spike = cfg["nan_step"], cfg["spike_step"]
    skip = scenario["skip"]
    assert set(skip["codes"].values()) == {0}, skip["log"]
    bad = {s[0]: s[4] for s in skip["steps"] if s[3]}
    assert set(bad) == {nan, spike}
    assert "loss nan" in bad[nan] and any("spike" in p for p in bad[spike])
    cut = _by_step(scenario["cut"]["steps"])
    unpoisoned = _by_step(scenario["unpoisoned"])
    for step, loss, grad_norm, skipped, _ in skip["steps"]:
        if skipped:
            continue
        shift = (step > nan) + (step > spike)
        assert (step - shift, loss, grad_norm) == cut[step - shift], step
        if step < nan:
            assert (step, loss, grad_norm) == unpoisoned[step]
    assert _by_step(skip["steps"])[nan + 1] != unpoisoned[nan + 1]  # the comparison can fail


def test_bad_steps_are_logged_with_data_position_and_documents(scenario):
    records = {r["step"]: r for r in scenario["skip"]["records"]}
    nan = scenario["config"]["nan_step"]
    record = records[nan]
    start = (nan - 1) * 16
    assert record["samples"] == [start, start + 16] and record["consumed_samples"] == start
    assert record["action"] == "skip" and record["bad_in_row"] == 1
    (suspect,) = record["suspect_micro_batches"]  # the planted one: micro-batch 0 of DP rank 0
    assert (suspect["dp_rank"], suspect["micro_batch"], suspect["samples"]) == (0, 0, [start, start + 2])
    assert suspect["loss_per_token"] != suspect["loss_per_token"]  # NaN
    for sample in (str(start), str(start + 1)):
        pieces = record["documents"][sample]
        assert pieces and all(len(p) == 4 and p[0].endswith("docs") and 0 <= p[1] < 200 and p[2] < p[3] for p in pieces)
        assert sum(p[3] - p[2] for p in pieces) == 33  # seq_length + 1 tokens per sample
    assert any("spike" in p for p in records[scenario["config"]["spike_step"]]["problems"])


def test_rollback_reloads_the_checkpoint_and_drops_the_batch(scenario):
    cfg = scenario["config"]
    rollback = scenario["rollback"]
    assert set(rollback["codes"].values()) == {0}, rollback["log"]
    order = [s[0] for s in rollback["steps"]]
    # checkpoints at 4 and 8: bad 6 -> back to 4, replay 5, drop 6; bad 11 -> back to 8, replay 9, 10, drop 11
    # (asynchronous saves: each rollback first completed the save still being written)
    assert order == [1, 2, 3, 4, 5, 6, 5, 6, 7, 8, 9, 10, 11, 9, 10, 11, 12, 13, 14]
    first, replay = {}, {}
    for step, loss, grad_norm, skipped, problems in rollback["steps"]:
        (replay if step in first else first)[step] = (loss, grad_norm, skipped, problems)
    for step in (5, 9, 10):  # replays of restored state are bit-identical to the first pass
        assert replay[step] == first[step]
    for step in (cfg["nan_step"], cfg["spike_step"]):
        assert first[step][3] and replay[step][2] and replay[step][0] is None  # dropped: never computed
    skip = _by_step(scenario["skip"]["steps"])
    final = {**first, **replay}  # the trajectory the run kept
    for step, (loss, grad_norm, skipped, _) in final.items():
        if not skipped:  # rolling back and dropping the batch ends where skipping it does
            assert (step, loss, grad_norm) == skip[step], step


def test_k_bad_steps_in_a_row_stop_the_run(scenario):
    stop = scenario["stop"]
    nan = scenario["config"]["nan_step"]
    assert set(stop["codes"].values()) == {EXIT_BAD_NUMERICS}, stop["log"]
    code, reason = stop["status"]
    assert code == EXIT_BAD_NUMERICS and f"3 bad step(s) in a row, the last at step {nan + 2}" in reason
    assert [(r["step"], r["action"]) for r in stop["records"]] == [(nan, "skip"), (nan + 1, "skip"), (nan + 2, "stop")]
    assert "loss inf" in stop["records"][1]["problems"]
    assert stop["tracker"] == 4  # nothing saved after the bad steps began
    assert [s[0] for s in stop["steps"]] == list(range(1, nan + 3))

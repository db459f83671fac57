"""A rank that dies (SIGKILL), freezes (SIGSTOP) or hangs stops the whole job within the watchdog's
bounds, with a message naming it and its step and phase; a restart resumes from the last
complete checkpoint. The last test does the dead-rank case under the real torchrun."""

import json
import re

from megacode.resilience.exit_codes import EXIT_PEER_FAILURE, read_status
from tests.faults.common import argv
from tests.training.launch import torchrun

SCENARIO = "ranks"
BOUND_S = 30.0  # heartbeat timeout 3 s + interval; generous for a loaded CI machine


def _message(log: str) -> str:
    lines = [line for line in log.splitlines() if "stops the job" in line]
    assert lines, log[-3000:]
    return lines[-1]


def test_dead_rank_stops_the_job_naming_the_rank_step_and_phase(scenario):
    for case in scenario["dead"]:
        victim = case["victim"]
        survivor = 1 - victim
        assert case["codes"][str(victim)] == -9
        assert case["codes"][str(survivor)] == EXIT_PEER_FAILURE, case["survivor_logs"]
        assert case["seconds"] < BOUND_S
        message = _message(case["survivor_logs"][str(survivor)])
        assert re.search(rf"rank {victim} \(host \S+, pid \d+\) died: .* at step \d+ in (forward-backward|optimizer)",
                         message), message
        assert case["status"][0] == EXIT_PEER_FAILURE and f"rank {victim}" in case["status"][1]


def test_restart_after_a_dead_rank_resumes_from_the_last_checkpoint(scenario):
    reference = {s[0]: tuple(s) for s in scenario["reference"]}
    for case in scenario["dead"]:
        assert set(case["restart_codes"].values()) == {0}, case["restart_log"]
        steps = [tuple(s) for s in case["restart"]]
        assert steps[0][0] == case["tracker"] + 1 and case["tracker"] >= 3
        assert all(step == reference[step[0]] for step in steps)


def test_frozen_rank_is_named_after_the_heartbeat_timeout(scenario):
    for case in scenario["frozen"]:
        victim = case["victim"]
        assert case["codes"][str(1 - victim)] == EXIT_PEER_FAILURE
        assert 3.0 <= case["seconds"] < BOUND_S  # not before the timeout: nothing else gives it away
        message = _message(case["survivor_logs"][str(1 - victim)])
        assert re.search(rf"rank {victim} .* is dead or frozen: no heartbeat for [\d.]+ s .* at step \d+ in "
                         rf"(forward-backward|optimizer)", message), message


def test_hung_rank_is_named_with_where_it_hangs(scenario):
    for case in scenario["hung"]:
        assert set(case["codes"].values()) == {EXIT_PEER_FAILURE}, case["logs"]
        assert case["seconds"] < BOUND_S + 5
        for rank in ("0", "1"):
            message = _message(case["logs"][rank])
            assert f"rank {case['victim']} is hung at step {case['step']} in optimizer" in message, message
            assert "inject.py" in message and f"rank(s) {1 - case['victim']} wait for it in a collective" in message
        assert case["status"][0] == EXIT_PEER_FAILURE


def test_under_torchrun_a_dead_rank_ends_the_job_and_a_relaunch_resumes(scenario, tmp_path):
    """Real launcher: rank 1 is SIGKILLed 20 ms into step 5; rank 0 names it and exits 43, torchrun
    ends the job; a new launch (as a requeued job would) resumes from step 3's checkpoint. (A
    restart inside one torchrun, --max-restarts, is no option on gloo here: Megatron's process
    subgroups find the first attempt's addresses in the reused rendezvous store.)"""
    ckpt = tmp_path / "ckpt"
    common = [f"checkpoint.dir={ckpt}", "checkpoint.interval=3", "train.iters=8"]
    first = torchrun(2, ["-m", "megacode.train"] + argv("pp2", None, *common), timeout=300, check=False,
                     env={"MEGACODE_TEST_KILL_AT": "1:5:forward-backward:0.02"})
    output = first.stdout + first.stderr
    assert first.returncode != 0, output[-4000:]
    message = _message(output)
    assert re.search(r"rank 1 \(host \S+, pid \d+\) died: .* at step 5 in forward-backward", message), message
    assert read_status(ckpt / "exit_status.txt") == (EXIT_PEER_FAILURE, message.split("megacode: ", 1)[1])
    history = tmp_path / "history.json"
    second = torchrun(2, ["-m", "megacode.train"] + argv("pp2", history, *common), timeout=300, check=False)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    steps = [(s["step"], s["loss"], s["grad_norm"]) for s in json.loads(history.read_text())]
    reference = {s[0]: tuple(s) for s in scenario["reference"]}
    assert [s[0] for s in steps] == [4, 5, 6, 7, 8]
    assert all(step == reference[step[0]] for step in steps)

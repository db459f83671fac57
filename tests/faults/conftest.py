"""The scenario tests share one run of tests/faults/run_scenarios.py: one process imports torch and
Megatron-Core once and forks every rank of every attempt (tests/faults/forklaunch.py).

Environment knobs: MEGACODE_FAULT_REPEAT=R multiplies signals and kills (the soak: R=10 is 200
SIGTERMs on 2 ranks, 20 on 4, 100 kills inside saves); MEGACODE_FAULT_SEED=S picks other
random points.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.faults.forklaunch import REPO

TIMEOUT_PER_REPEAT_S = 900


def _wanted(session) -> list[str]:
    names = []
    for item in session.items:
        name = getattr(item.module, "SCENARIO", None)
        if name and name not in names:
            names.append(name)
    return names


@pytest.fixture(scope="session")
def scenario_results(request, tmp_path_factory):
    names = _wanted(request.session)
    out = tmp_path_factory.mktemp("faults")
    repeat = int(os.environ.get("MEGACODE_FAULT_REPEAT", "1"))
    seed = os.environ.get("MEGACODE_FAULT_SEED", "20240")
    command = [sys.executable, "-m", "tests.faults.run_scenarios", "--out", str(out), "--seed", seed,
               "--repeat", str(repeat), *names]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    with open(out / "runner.log", "w") as log:
        proc = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                              timeout=TIMEOUT_PER_REPEAT_S * repeat)
    results = {}
    for name in names:
        path = out / f"{name}.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
        else:
            tail = (out / "runner.log").read_text()[-4000:]
            results[name] = {"error": f"runner exited {proc.returncode} without a result for {name}:\n{tail}"}
    return results


@pytest.fixture
def scenario(scenario_results, request):
    """This test module's scenario result (module attribute SCENARIO); a scenario error fails the test."""
    result = scenario_results[request.module.SCENARIO]
    if "error" in result:
        pytest.fail(f"scenario {request.module.SCENARIO} failed:\n{result['error']}")
    return result

"""Run fault scenarios in one process that forks every rank of every attempt; write JSON results.

    python -m tests.faults.run_scenarios --out DIR [--seed S] [--repeat R] preempt saves ranks numerics

`--repeat R` multiplies the number of signals/kills (the soak: R=10 sends 200 SIGTERMs and 100
kills during saves). Each scenario's result (or its error) goes to DIR/<name>.json; the tests in
tests/faults read them. Heavy imports happen in main(), not at import: spawned helper processes
import this module.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

SCENARIOS = ("preempt", "saves", "ranks", "numerics")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=20240)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("names", nargs="+", choices=SCENARIOS)
    args = parser.parse_args(argv)

    from tests.faults.forklaunch import ForkLauncher, preload

    preload()
    import random

    from tests.faults import sc_numerics, sc_preempt, sc_ranks, sc_saves
    from tests.faults.common import References

    modules = {"preempt": sc_preempt, "saves": sc_saves, "ranks": sc_ranks, "numerics": sc_numerics}
    args.out.mkdir(parents=True, exist_ok=True)
    launcher = ForkLauncher(args.out / "runs", nproc=2)
    refs = References(launcher, args.out / "runs")
    failed = 0
    for name in args.names:
        start = time.monotonic()
        try:
            result = modules[name].run(launcher, refs, args.out / "runs", random.Random(f"{args.seed}/{name}"),
                                       args.repeat)
        except Exception:  # noqa: BLE001 - the tests report it; other scenarios still run
            result = {"error": traceback.format_exc()}
            failed += 1
        result["seconds"] = round(time.monotonic() - start, 1)
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1, default=str))
        print(f"{name}: {'error' if 'error' in result else 'done'} in {result['seconds']} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

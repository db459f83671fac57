"""Entry point: `torchrun --nproc-per-node N -m megacode.train --config FILE [key=value ...]`.

Config, build, train, close. A bad config fails before any process group exists, with one
line from rank 0 and exit code 2 from every rank; so does a checkpoint to load that is not there
or holds another model (megacode.checkpoint.preflight).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

from megacode.checkpoint.preflight import checkpoint_to_load
from megacode.config import ConfigError, check_schedule, load_config, resolve_layout

EXIT_CONFIG_ERROR = 2
RANK0_REPORT_WAIT_S = 30.0
"""How long a rank other than 0 waits before exiting on a config error: every rank runs the same
checks, and torchrun ends all workers as soon as one exits, so a rank that exits first could end
rank 0 before it printed the error (seen on a loaded machine: exit 2 with no message at all)."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m megacode.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML run config (configs/...)")
    parser.add_argument("--check-only", action="store_true",
                        help="validate the config for WORLD_SIZE processes and exit")
    parser.add_argument("--history-json", default=None,
                        help="write this process's step losses/grad norms as JSON (used by tests)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.iters=20 parallel.tp=2")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from megacode.distributed.init import rank_from_env, world_size_from_env

    args = parse_args(argv)
    rank = rank_from_env()
    try:
        cfg = load_config(args.config, args.overrides)
        layout = resolve_layout(cfg, world_size_from_env())
        check_schedule(cfg)
        load_dir = checkpoint_to_load(cfg)
    except ConfigError as err:
        if rank == 0:
            print(f"megacode: config error: {err}", file=sys.stderr)
        else:  # rank 0 fails the same check, prints it and exits; torchrun then ends this rank
            time.sleep(RANK0_REPORT_WAIT_S)
        return EXIT_CONFIG_ERROR
    if args.check_only:
        if rank == 0:
            print(f"config OK: {layout}")
        return 0

    # Megatron-Core warns at import that apex/TE are absent on CPU machines: expected, not news.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"megatron\..*")
    from megacode.distributed.init import destroy, init_model_parallel, init_process_group
    from megacode.resilience.control import FaultControl
    from megacode.training.logger import setup_console
    from megacode.training.trainer import build_run, train

    setup_console(rank)
    init_process_group(cfg.parallel)
    faults = None
    try:
        faults = FaultControl.start(cfg)  # signal handlers, watchdog, exit-status file
        init_model_parallel(layout, cfg.seed, cfg.parallel.timeout_minutes)
        run = build_run(cfg, layout, load_dir)
        history = train(run, faults)
        run.logger.close()
        if args.history_json and rank == 0:
            with open(args.history_json, "w") as handle:
                json.dump([vars(step) for step in history], handle)
    except Exception as err:
        if faults is not None:
            faults.on_exception(err)  # exits EXIT_PEER_FAILURE when a peer, not this rank, failed
        raise
    finally:
        if faults is not None:
            faults.close()
        destroy()
    return faults.exit_code  # megacode.resilience.exit_codes: 0 done, 42 requeue, 44 bad numerics


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Dry run of a full-size config on this machine (no GPU): validate, count, estimate memory and cost.

    python tools/plan_run.py --config configs/codellama-7b/stage1_code.yaml --nodes 16
    python tools/plan_run.py --config configs/codellama-70b/stage3_long_context.yaml --nodes 16 \
        --mfu 0.35 parallel.pp=8          # dotted overrides as for megacode.train

Exit status: 0 when the config is valid and the peak estimate fits an 80 GB H100 (79.6 GiB),
3 when it is valid but does not fit, 2 on a config error (one line naming the value).
What is checked and the formulas: megacode/planning/plan.py and memory.py.
"""

import argparse
import os
import sys
import warnings

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

EXIT_CONFIG_ERROR, EXIT_DOES_NOT_FIT = 2, 3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML run config")
    parser.add_argument("--nodes", type=int, required=True, help="nodes the run gets")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--mfu", type=float, default=None, help="assumed MFU for the time estimate (default 0.40)")
    parser.add_argument("--unfused-attention", action="store_true",
                        help="model attention that stores the s x s scores (no Transformer Engine)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. parallel.tp=4")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore", category=UserWarning, module=r"megatron\..*")
    from megacode.config import ConfigError, load_config
    from megacode.planning import DEFAULT_MFU, H100_USABLE_GIB, format_plan, plan_run

    try:
        cfg = load_config(args.config, args.overrides)
        plan = plan_run(cfg, args.nodes, args.gpus_per_node, args.mfu or DEFAULT_MFU,
                        flash_attention=not args.unfused_attention, config_path=args.config)
    except ConfigError as err:
        print(f"plan_run: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    print(format_plan(plan))
    return 0 if plan.peak_gib < H100_USABLE_GIB else EXIT_DOES_NOT_FIT


if __name__ == "__main__":
    sys.exit(main())

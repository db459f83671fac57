#!/usr/bin/env python
"""Reproduce the Code Llama paper's ablations at CPU scale with megacode's own trainer, data
pipeline, FIM and evaluation.

    python tools/reproduce.py fim  --scale small --out runs/reproduce/fim   # FIM 0.9 vs 0 (Tables 5, 14)
    python tools/reproduce.py lcft --scale small --out runs/reproduce/lcft  # LCFT θ 10^6 vs 10^4 (Fig. 4a, Table 18)
    python tools/reproduce.py fim --scale micro --out /tmp/fim --cache-dir /tmp/cache fim.eval.match_cases=20

Configs: configs/experiments/{fim,lcft}_{micro,small}.yaml (or --config FILE), dotted overrides
after the options. Writes OUT/results.json, OUT/report.md, OUT/<experiment>.png and
OUT/reproduce.log; the corpus, tokenizer and datasets are cached under --cache-dir (default
OUT/cache: give both experiments the same one to share them). What is measured and how:
megacode/experiments/.
"""

import argparse
import importlib.util
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

EXIT_CONFIG_ERROR = 2


def parse_args(argv=None) -> argparse.Namespace:
    from megacode.experiments import EXPERIMENTS, SCALES

    p = argparse.ArgumentParser(prog="reproduce.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("experiment", choices=EXPERIMENTS)
    p.add_argument("--scale", choices=SCALES, default="small", help="configs/experiments/<experiment>_<scale>.yaml")
    p.add_argument("--config", default=None, help="another experiment config file (overrides --scale's)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--cache-dir", default=None, help="corpus/tokenizer/dataset cache (default OUT/cache)")
    p.add_argument("--reuse", action="store_true",
                   help="keep trained runs under OUT/runs whose run.yaml is unchanged (re-evaluate only)")
    p.add_argument("overrides", nargs="*", help="dotted experiment-config overrides, e.g. fim.eval.match_cases=20")
    return p.parse_intermixed_args(argv)  # overrides may follow the options


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # megatron's "no TE/apex" warnings, in the ranks too
    import warnings

    warnings.filterwarnings("ignore")
    from megacode.config import ConfigError
    from megacode.experiments.config import config_path, load_experiment
    from megacode.experiments.driver import reproduce

    path = args.config or config_path(args.experiment, args.scale)
    try:
        cfg = load_experiment(path, args.overrides, experiment=args.experiment)
    except ConfigError as err:
        print(f"reproduce: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if importlib.util.find_spec("matplotlib") is None:  # checked before hours of training, not after
        print("reproduce: the plots need matplotlib: pip install matplotlib==3.10.8 (or megacode's [test] extra)",
              file=sys.stderr)
        return EXIT_CONFIG_ERROR
    reproduce(cfg, args.out, args.scale if args.config is None else f"{args.scale} ({path})",
              args.cache_dir, args.reuse)
    return 0


if __name__ == "__main__":
    sys.exit(main())

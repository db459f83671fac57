#!/usr/bin/env python
"""Evaluate code generation on HumanEval or MBPP (greedy pass@1, sampled pass@k), or score a
samples file without any model. Every program runs in megacode's sandbox.

    python tools/evaluate.py humaneval --model HF_DIR [--config configs/eval/humaneval_greedy.yaml]
    python tools/evaluate.py humaneval --samples FILE [--k 1,10,100]     # writes FILE_results.jsonl
    python tools/evaluate.py mbpp --mbpp mbpp.jsonl --model HF_DIR
    python tools/evaluate.py infill --model HF_DIR --samples PROBLEMS.jsonl [--out DIR]   # human-eval-infilling
                                                 # format; greedy pass@1 for the PSM and SPM layouts
    python tools/evaluate.py multipl-e --problems ROWS.jsonl (--model HF_DIR | --samples FILE) [--languages cpp,java]
                                                 # MultiPL-E rows; samples {"name", "completion"[, "language"]}
    python tools/evaluate.py apps --problems APPS.jsonl (--model HF_DIR | --samples FILE) [--shots TRAIN.jsonl]
                                                 # codeparrot/apps rows; samples {"problem_id", "completion"}

Extra `section.key=value` arguments override the config (e.g. generation.batch_size=16).
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from megacode.eval import hooks
from megacode.eval import polyglot_runner
from megacode.eval.config import EvalConfig
from megacode.eval.passk import parse_ks
from megacode.eval.problems import score_samples_file, summary_table
from megacode.eval.runner import load_problems, run_benchmark
from megacode.eval.sandbox import Sandbox
from megacode.eval.sandbox_config import SandboxError
from megacode.config.loader import load_dataclass as load


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("mode", choices=("humaneval", "mbpp", "infill", "multipl-e", "apps"))
    parser.add_argument("overrides", nargs="*", help="section.key=value config overrides")
    parser.add_argument("--config", help="YAML file (configs/eval/*.yaml)")
    source = parser.add_argument_group("source (one of them; infill takes --model and --samples PROBLEMS.jsonl)")
    source.add_argument("--model", help="Hugging Face causal LM directory")
    source.add_argument("--samples", help="score this human-eval format JSONL (task_id, completion) without a model")
    source.add_argument("--megacode-checkpoint", help="megacode checkpoint: exported to OUT/hf first, then evaluated")
    parser.add_argument("--mbpp", help="local mbpp.jsonl (mode mbpp)")
    parser.add_argument("--k", help="pass@k values, e.g. 1,10,100")
    parser.add_argument("--n", type=int, help="samples per problem (generation.num_samples)")
    parser.add_argument("--temperature", type=float, help="0 = greedy")
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--batch-size", type=int, help="generation batch (sequences)")
    parser.add_argument("--workers", type=int, help="parallel sandboxed test runs (0 = one per core)")
    parser.add_argument("--timeout", type=float, help="seconds per test run")
    parser.add_argument("--limit", type=int, help="only the first N problems")
    parser.add_argument("--out", help="output directory")
    parser.add_argument("--partial", action="store_true", help="with --samples: allow problems without samples")
    parser.add_argument("--problems", help="multipl-e / apps: the problem rows (JSONL)")
    parser.add_argument("--languages", help="multipl-e: only these languages, e.g. cpp,java,php,ts,cs,sh,js")
    parser.add_argument("--compile-timeout", type=float, help="multipl-e: seconds per compile (default: MultiPL-E's)")
    parser.add_argument("--shots", help="apps: JSONL of solved problems; the first --num-shots go before each question")
    parser.add_argument("--num-shots", type=int, default=2, help="apps: few-shot examples (Code Llama: 2)")
    args = parser.parse_intermixed_args(argv)  # overrides may come after the options
    given = [name for name in ("model", "samples", "megacode_checkpoint") if getattr(args, name)]
    if len(given) > 1 and not (args.mode == "infill" and given == ["model", "samples"]):
        parser.error("give only one of --model, --samples, --megacode-checkpoint")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.mode == "infill":
            return infill(args)
        if args.mode in ("multipl-e", "apps"):
            return polyglot(args)
        if args.megacode_checkpoint:  # evaluate its Hugging Face export
            args.model = str(hooks.export_megacode_checkpoint(args.megacode_checkpoint, args.out or "runs/eval"))
        values = {"benchmark": args.mode, "model": args.model, "mbpp_path": args.mbpp, "limit": args.limit,
                  "output_dir": args.out, "ks": parse_ks(args.k) if args.k else None,
                  "generation.num_samples": args.n, "generation.temperature": args.temperature,
                  "generation.max_new_tokens": args.max_new_tokens, "generation.batch_size": args.batch_size,
                  "sandbox.workers": args.workers, "sandbox.timeout_s": args.timeout}
        cfg = load(EvalConfig, args.config, args.overrides, values)
        if args.samples:
            sandbox = Sandbox(cfg.sandbox)
            logging.getLogger().info(sandbox.isolation.describe())
            scored, results = score_samples_file(Path(args.samples), load_problems(cfg), sandbox, cfg.ks,
                                                 args.partial, name=cfg.benchmark)
            table = summary_table(cfg.benchmark, scored)
            print(f"per-sample results: {results}")
        else:
            scored = run_benchmark(cfg)
            table = (Path(cfg.output_dir) / "summary.md").read_text().rstrip()
            print(f"outputs: {cfg.output_dir}")
    except (hooks.FeatureMissing, SandboxError, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"evaluate: {err}", file=sys.stderr)  # ConfigError is a ValueError
        return 2
    print(table)
    print(json.dumps({f"pass@{k}": round(v, 6) for k, v in scored.pass_at.items()}))
    return 0


def polyglot(args) -> int:
    """multipl-e and apps: settings from the flags, then megacode.eval.polyglot_runner."""
    from megacode.eval.generate import GenerationSettings
    from megacode.eval.sandbox_config import SandboxConfig

    if not args.problems:
        raise ValueError(f"{args.mode} needs --problems FILE (the benchmark's rows as JSONL)")
    if args.megacode_checkpoint:  # evaluate its Hugging Face export
        args.model = str(hooks.export_megacode_checkpoint(args.megacode_checkpoint, args.out or f"runs/eval-{args.mode}"))
    if bool(args.model) == bool(args.samples):
        raise ValueError(f"{args.mode} needs one of --model HF_DIR or --samples FILE")
    given = {"num_samples": args.n, "temperature": args.temperature, "max_new_tokens": args.max_new_tokens,
             "batch_size": args.batch_size}
    settings = GenerationSettings(**{k: v for k, v in given.items() if v is not None})
    sandbox = SandboxConfig(**({} if args.workers is None else {"workers": args.workers}))
    ks = parse_ks(args.k) if args.k else [1]
    common = dict(samples_path=args.samples, model=args.model, ks=ks, settings=settings, sandbox_config=sandbox,
                  out_dir=args.out)
    if args.mode == "multipl-e":
        languages = [c for c in args.languages.split(",") if c] if args.languages else None
        report = polyglot_runner.run_multipl_e(args.problems, languages=languages, compile_timeout_s=args.compile_timeout,
                                               run_timeout_s=args.timeout, **common)
        figures = report["pass@k"]
    else:
        report = polyglot_runner.run_apps(args.problems, shots_path=args.shots, num_shots=args.num_shots,
                                          limit=args.limit, **({"case_timeout_s": args.timeout} if args.timeout else {}),
                                          **common)
        figures = {d: {"strict_accuracy": round(m["strict_accuracy"], 6),
                       "test_case_average": round(m["test_case_average"], 6),
                       **{f"pass@{k}": round(v, 6) for k, v in m["pass@k"].items()}} for d, m in report["metrics"].items()}
    print(f"per-sample results: {report['results']}")
    print(report["table"])
    print(json.dumps(figures))
    return 0


def infill(args) -> int:
    from megacode.eval.generate import GenerationSettings
    from megacode.eval.sandbox_config import SandboxConfig

    settings = GenerationSettings(**({"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}),
                                  **({"batch_size": args.batch_size} if args.batch_size else {}))
    sandbox = SandboxConfig(timeout_s=args.timeout or 10.0, **({} if args.workers is None else {"workers": args.workers}))
    out = args.out or "runs/eval-infill"
    summary = hooks.evaluate_infilling(args.model or "", args.samples or "", output_dir=out, settings=settings,
                                       sandbox_config=sandbox, limit=args.limit)
    print(f"outputs: {out}")
    print(summary["table"])
    print(json.dumps({f"pass@1 {m}": round(v, 6) for m, v in summary["pass@1"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

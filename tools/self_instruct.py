#!/usr/bin/env python
"""Build self-instruct data (Code Llama §2.5): questions from one model, unit tests and ten
solutions per question from another, the first solution that passes its tests in the sandbox.

    python tools/self_instruct.py --config configs/selfinstruct/codellama.yaml \\
        question_model=/models/llama-2-70b-chat-hf code_model=/models/CodeLlama-7b-hf
    python tools/self_instruct.py --config ... --stages execute,write     # rerun some stages

Stages: questions, dedup, generate, execute, write (default: all). Each resumes from its output
file in output_dir; counts.json there holds the count at every step. The instruct stage reads
dialogs.jsonl: {"messages": [{"role", "content"}, ...], "source": "self-instruct"} per line.
"""

import argparse
import json
import logging
import sys

from megacode.eval.sandbox_config import SandboxError
from megacode.config.loader import load_dataclass as load
from megacode.selfinstruct.config import SelfInstructConfig
from megacode.selfinstruct.pipeline import parse_stages, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (e.g. rounds=10)")
    parser.add_argument("--config", help="YAML file (configs/selfinstruct/*.yaml)")
    parser.add_argument("--stages", default="all", help="all, or a comma-separated subset of the stages")
    parser.add_argument("--out", help="output directory (output_dir)")
    parser.add_argument("--workers", type=int, help="parallel sandbox runs (sandbox.workers)")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        stages = parse_stages(args.stages)
        cfg = load(SelfInstructConfig, args.config, args.overrides,
                   {"output_dir": args.out, "sandbox.workers": args.workers})
        counts = run(cfg, stages)
    except (ValueError, FileNotFoundError, SandboxError) as err:  # ConfigError is a ValueError
        print(f"self_instruct: {err}", file=sys.stderr)
        return 2
    print(json.dumps(counts, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Convert between Hugging Face Llama directories and megacode checkpoints (one process, streaming).

    # Llama 2 (HF) → megacode checkpoint for stage 1, recorded at TP2 x PP4 (loadable at any layout)
    python tools/convert_checkpoint.py hf-to-megacode --input llama-2-7b-hf --output ckpt/llama2-7b \\
        --tp 2 --pp 4 [--vp N] [--flavor codellama-7b] [--dtype bf16]

    # any megacode checkpoint (root or iter_XXXXXXX/) → Hugging Face directory
    python tools/convert_checkpoint.py megacode-to-hf --input runs/stage3/checkpoints --output codellama-7b-hf \\
        [--tokenizer-model tokenizer.model] [--step N] [--dtype bf16] [--max-shard-size 5GB]

Then `checkpoint.load=ckpt/llama2-7b checkpoint.finetune=true` starts a stage from the import, and
`AutoModelForCausalLM.from_pretrained("codellama-7b-hf")` / `AutoTokenizer` load the export.
Mapping, vocabulary growth and file layouts: megacode/convert/.
"""

import argparse
import logging
import os
import sys
import warnings

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

EXIT_BAD_INPUT = 2


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="convert_checkpoint.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    imp = sub.add_parser("hf-to-megacode", help="Hugging Face LlamaForCausalLM directory → megacode checkpoint")
    imp.add_argument("--input", required=True, help="HF model directory (config.json, safetensors/bin shards)")
    imp.add_argument("--output", required=True, help="checkpoint root to create (must not exist)")
    imp.add_argument("--tp", type=int, default=1, help="tensor-parallel size recorded and used for chunking")
    imp.add_argument("--pp", type=int, default=1, help="pipeline-parallel size recorded")
    imp.add_argument("--vp", type=int, default=None, help="virtual pipeline stages per rank recorded")
    imp.add_argument("--flavor", default=None,
                     help="model flavor (default: the one config.json's shapes match, else custom: the shapes "
                          "are written into the checkpoint's config and OUTPUT/model.yaml)")
    imp.add_argument("--dtype", default=None, help="bf16, fp16 or fp32 (default: keep the input's)")

    exp = sub.add_parser("megacode-to-hf", help="megacode checkpoint → Hugging Face directory")
    exp.add_argument("--input", required=True, help="checkpoint root or one iter_XXXXXXX directory")
    exp.add_argument("--output", required=True, help="HF directory to create (must not exist)")
    exp.add_argument("--tokenizer-model", default=None,
                     help="SentencePiece model (default: INPUT/tokenizer.model, then the run's data.tokenizer_model)")
    exp.add_argument("--step", type=int, default=None, help="step to export (default: the latest)")
    exp.add_argument("--dtype", default=None, help="bf16, fp16 or fp32 (default: keep the checkpoint's)")
    exp.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard, e.g. 5GB or 500MB")

    for p in (imp, exp):
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def print_model_section(out) -> None:
    """What a run needs for the import: its model section (also in OUT/model.yaml), as YAML and as overrides."""
    import shlex

    from megacode.checkpoint.dist_ckpt import read_common
    from megacode.checkpoint.tracker import step_dir
    from megacode.config import config_from_dict
    from megacode.convert.hf_import import MODEL_YAML, model_overrides

    model = config_from_dict(read_common(step_dir(out, 0))["config"]).model
    print(f"wrote megacode checkpoint {out}; a run config needs this model section ({out / MODEL_YAML}):\n")
    print("".join(line + "\n" for line in (out / MODEL_YAML).read_text().splitlines() if not line.startswith("#")))
    print("or on the command line:\n  " + " ".join(shlex.quote(o) for o in model_overrides(model))
          + f" checkpoint.load={shlex.quote(str(out))} checkpoint.finetune=true")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("megacode.convert").setLevel(logging.INFO)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"megatron\.")  # "no TE/apex": not needed here
    from megacode.convert import ConvertError, ExportOptions, ImportOptions, export_hf, import_hf

    try:
        if args.command == "hf-to-megacode":
            out = import_hf(ImportOptions(input=args.input, output=args.output, tp=args.tp, pp=args.pp,
                                          vp=args.vp, flavor=args.flavor, dtype=args.dtype,
                                          progress=not args.no_progress))
            print_model_section(out)
        else:
            out = export_hf(ExportOptions(input=args.input, output=args.output, tokenizer_model=args.tokenizer_model,
                                          step=args.step, dtype=args.dtype, max_shard_size=args.max_shard_size,
                                          progress=not args.no_progress))
            print(f"wrote Hugging Face model {out}")
    except ConvertError as err:
        print(f"convert_checkpoint: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())

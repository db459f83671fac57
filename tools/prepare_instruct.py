#!/usr/bin/env python
"""Tokenize dialog JSONL (user data, self-instruct output) into an instruct dataset.

    python tools/prepare_instruct.py --input dialogs.jsonl selfinstruct/dialogs.jsonl \
        --tokenizer-model tokenizer.model --output-prefix data/instruct/dialogs [--rejects rejects.jsonl]

Writes PREFIX.bin/.idx (ids), PREFIX_lossmask.bin/.idx (1 on answer tokens) and PREFIX.instruct.json
(counts). Use it in a config as `data.paths: [{path: PREFIX, weight: W, kind: dialog}, ...]`.
Template and masking rules: megacode/instruct/chat.py.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, help="dialog JSONL files (.jsonl or .jsonl.gz)")
    parser.add_argument("--tokenizer-model", required=True, help="SentencePiece model (Code Llama tokenizer.model)")
    parser.add_argument("--output-prefix", required=True, help="dataset prefix to write")
    parser.add_argument("--rejects", default=None, metavar="FILE", help="write skipped dialogs with reasons (JSONL)")
    parser.add_argument("--tokenizer-backend", default="auto", choices=["auto", "megacode", "sentencepiece"])
    args = parser.parse_args(argv)

    from megacode.instruct.prepare import prepare_instruct
    from megacode.tokenizer import load

    try:
        summary = prepare_instruct(args.input, load(args.tokenizer_model, args.tokenizer_backend),
                                   args.output_prefix, args.rejects)
    except (FileNotFoundError, ValueError) as e:
        print(f"prepare_instruct: error: {e}", file=sys.stderr)
        return 2
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Tokenize corpora into Megatron indexed datasets (a drop-in for Megatron-LM's tool).

    python tools/preprocess_data.py --input corpus.jsonl.zst --output-prefix data/code \
        --tokenizer-type Llama2Tokenizer --tokenizer-model tokenizer.model --append-eod --workers 16
    python tools/preprocess_data.py --input path/to/repo --extensions .py .c \
        --output-prefix data/repo --tokenizer-model tokenizer.model --append-eod --rejects rejects.jsonl

Flags, outputs and differences from Megatron-LM: megacode/data/preprocess/cli.py.
"""

import os
import sys

# numpy's OpenBLAS pool is never used here, and its threads spin for a while after import,
# taking cores from the encoding threads: start without it (before numpy is imported).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from megacode.data.preprocess import preprocess  # noqa: E402
from megacode.data.preprocess.cli import config_from_args  # noqa: E402


def main(argv=None) -> int:
    cfg = config_from_args(argv)
    try:
        preprocess(cfg)
    except (FileNotFoundError, ValueError) as e:
        print(f"preprocess_data: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

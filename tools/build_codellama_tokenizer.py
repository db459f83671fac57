#!/usr/bin/env python
"""Build Code Llama's tokenizer (32,016 pieces, ▁<PRE>=32007 ▁<SUF>=32008 ▁<MID>=32009 ▁<EOT>=32010)
from Llama 2's tokenizer.model.

    python tools/build_codellama_tokenizer.py --input llama2/tokenizer.model --output codellama/tokenizer.model

The 16 appended pieces and why they are NORMAL BPE pieces: megacode/tokenizer/codellama.py.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from megacode.tokenizer import build_codellama_tokenizer, load  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="Llama 2 tokenizer.model (32,000 pieces)")
    p.add_argument("--output", required=True, help="where to write the Code Llama tokenizer.model")
    p.add_argument("--allow-non-llama-base", action="store_true",
                   help="extend a base that is not 32,000 pieces (infilling pieces at base+7..base+10)")
    args = p.parse_args(argv)
    try:
        out = build_codellama_tokenizer(args.input, args.output, args.allow_non_llama_base)
    except (FileNotFoundError, ValueError) as e:
        print(f"build_codellama_tokenizer: error: {e}", file=sys.stderr)
        return 2
    tok = load(out)
    print(f"wrote {out}: {tok.vocab_size} pieces, <PRE>={tok.pre_id} <SUF>={tok.suf_id} "
          f"<MID>={tok.mid_id} <EOT>={tok.eot_id}, encoder {tok.backend}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Merge indexed datasets into one (a drop-in for Megatron-LM's tools/merge_datasets.py).

    python tools/merge_datasets.py --input data/shards --output-prefix data/code_text_document
    python tools/merge_datasets.py --input data/a_text_document data/b_text_document --output-prefix data/ab

--input: a directory (every .bin/.idx pair in it, in sorted name order, as Megatron-LM's tool
does) or dataset prefixes, in the order given. Documents keep their boundaries and order; all
inputs must share one token dtype. The output is written under temporary names and renamed at
the end, so a failed merge leaves nothing under the output prefix.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from megacode.data.indexed import merge_datasets  # noqa: E402


def input_prefixes(inputs):
    """Prefixes to merge: a directory's complete .bin/.idx pairs (sorted), or the prefixes given."""
    if len(inputs) == 1 and os.path.isdir(inputs[0]):
        names = sorted(os.listdir(inputs[0]))
        prefixes = [os.path.join(inputs[0], n[:-4]) for n in names
                    if n.endswith(".idx") and n[:-4] + ".bin" in names]
        if not prefixes:
            raise FileNotFoundError(f"--input {inputs[0]}: no .bin/.idx pairs in this directory")
        return prefixes
    for prefix in inputs:
        for ext in (".bin", ".idx"):
            if not os.path.isfile(prefix + ext):
                raise FileNotFoundError(f"--input {prefix}: {prefix + ext} does not exist")
    return list(inputs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", nargs="+", required=True, help="a directory of datasets, or dataset prefixes")
    p.add_argument("--output-prefix", required=True, help="prefix of the merged .bin/.idx")
    p.add_argument("--multimodal", action="store_true", help="not supported (Megatron compatibility)")
    args = p.parse_args(argv)
    if args.multimodal:
        print("merge_datasets: error: --multimodal is not supported", file=sys.stderr)
        return 2
    try:
        prefixes = input_prefixes(args.input)
        start = time.perf_counter()
        merge_datasets(prefixes, args.output_prefix)
    except (FileNotFoundError, ValueError) as e:  # IndexedDatasetError is a ValueError
        print(f"merge_datasets: error: {e}", file=sys.stderr)
        return 2
    size = os.path.getsize(args.output_prefix + ".bin")
    seconds = time.perf_counter() - start
    print(f"merged {len(prefixes)} datasets into {args.output_prefix}.bin/.idx: {size / 1e6:,.1f} MB in "
          f"{seconds:.1f} s ({size / 1e6 / max(seconds, 1e-9):,.0f} MB/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

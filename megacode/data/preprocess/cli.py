"""Command line of tools/preprocess_data.py: Megatron-LM's flags, plus a few of our own.

Compatibility with Megatron-LM's tools/preprocess_data.py (SentencePiece tokenizers):
- same flags where they exist: --input, --json-keys, --output-prefix, --tokenizer-type,
  --tokenizer-model, --append-eod, --workers, --partitions, --log-interval,
  --keep-sequential-samples; same output names {prefix}_{key}_document.bin/.idx;
- same bytes for the same flags: SentencePiece's ids of each text (no BOS) plus EOS with
  --append-eod, uint16 below 65,500 pieces. (Megatron-LM's older megatron/training/tokenizer
  Llama2Tokenizer put a BOS first; --prepend-bos reproduces those files.)
- differences: the input order is always kept (Megatron's --partitions > 1 deals lines out
  round-robin unless --keep-sequential-samples); --partitions is accepted and changes nothing,
  since our workers share every file. Bad lines are skipped and counted instead of stopping
  the run; empty documents are skipped (Megatron writes them as empty documents).
  --split-sentences (NLTK) is not supported: Code Llama trains on whole documents.
"""

from __future__ import annotations

import argparse
from typing import List, Optional

from megacode.data.preprocess.pipeline import PreprocessConfig

SENTENCEPIECE_TYPES = ("SentencePieceTokenizer", "GPTSentencePieceTokenizer", "Llama2Tokenizer", "CodeLlamaTokenizer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Tokenize JSONL corpora (.jsonl/.json, .gz, .zst) or source trees (directories) "
        "into Megatron indexed datasets {prefix}_{key}_document.bin/.idx."
    )
    g = p.add_argument_group("input data")
    g.add_argument("--input", nargs="+", required=True, help="JSONL files, directories (source trees) or globs")
    g.add_argument("--json-keys", nargs="+", default=["text"], help="JSON keys to tokenize, one dataset each")
    g.add_argument("--split-sentences", action="store_true", help="not supported (Megatron compatibility)")
    g.add_argument("--keep-newlines", action="store_true", help="accepted; only meaningful with --split-sentences")
    g.add_argument("--extensions", nargs="+", default=None,
                   help="source trees: file extensions to take (default: common code and text formats)")
    g.add_argument("--meta-keys", nargs="+", default=[],
                   help="JSONL: fields copied to {prefix}_{key}_document.meta.jsonl (e.g. lang path)")
    g = p.add_argument_group("tokenizer")
    g.add_argument("--tokenizer-type", default="Llama2Tokenizer",
                   help=f"one of {', '.join(SENTENCEPIECE_TYPES)} (all the same SentencePiece path here)")
    g.add_argument("--tokenizer-model", required=True, help="SentencePiece model (Llama 2 / Code Llama tokenizer.model)")
    g.add_argument("--vocab-file", default=None, help="not supported (GPT-2/BERT vocabularies)")
    g.add_argument("--merge-file", default=None, help="not supported (GPT-2 merges)")
    g.add_argument("--tokenizer-backend", default="auto", choices=["auto", "megacode", "sentencepiece"],
                   help="encoder: our exact C++ core (auto/megacode) or the sentencepiece binding")
    g = p.add_argument_group("tokenization process")
    g.add_argument("--append-eod", action="store_true", help="append EOS to every document")
    g.add_argument("--prepend-bos", action="store_true", help="put BOS before every document")
    g.add_argument("--lang", default="english", help="accepted (NLTK sentence splitting language)")
    g = p.add_argument_group("output data")
    g.add_argument("--output-prefix", required=True, help="path prefix of the outputs")
    g.add_argument("--dataset-impl", default="mmap", choices=["mmap"], help="accepted (older Megatron flag)")
    g.add_argument("--rejects", default=None, metavar="FILE", help="write rejected lines/files with reasons (JSONL)")
    g = p.add_argument_group("runtime")
    g.add_argument("--workers", type=int, default=1,
                   help="encoding threads (1: everything in the main thread); one per core")
    g.add_argument("--partitions", type=int, default=1, help="accepted; order is always kept")
    g.add_argument("--keep-sequential-samples", action="store_true", help="accepted; order is always kept")
    g.add_argument("--log-interval", type=int, default=1000, help="documents between log lines (non-terminal stderr)")
    g.add_argument("--chunk-mb", type=float, default=1.0, help="input MB per work unit")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    return p


def config_from_args(argv: Optional[List[str]] = None) -> PreprocessConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.split_sentences:
        parser.error("--split-sentences is not supported: documents are tokenized whole")
    if args.tokenizer_type not in SENTENCEPIECE_TYPES:
        parser.error(f"--tokenizer-type {args.tokenizer_type}: only SentencePiece models are supported "
                     f"({', '.join(SENTENCEPIECE_TYPES)})")
    if args.vocab_file or args.merge_file:
        parser.error("--vocab-file/--merge-file are for GPT-2/BERT tokenizers, which are not supported")
    if args.partitions < 1:
        parser.error(f"--partitions must be >= 1, got {args.partitions}")
    try:
        return PreprocessConfig(
            inputs=args.input,
            output_prefix=args.output_prefix,
            tokenizer_model=args.tokenizer_model,
            json_keys=tuple(args.json_keys),
            append_eod=args.append_eod,
            prepend_bos=args.prepend_bos,
            workers=args.workers,
            chunk_bytes=max(1, int(args.chunk_mb * (1 << 20))),
            extensions=args.extensions,
            meta_keys=tuple(args.meta_keys),
            rejects_path=args.rejects,
            log_interval=args.log_interval,
            progress=not args.quiet,
            backend=args.tokenizer_backend,
        )
    except ValueError as e:
        parser.error(str(e))

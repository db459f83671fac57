"""Preprocessing: JSONL corpora and source trees -> Megatron indexed datasets of token ids.

    from megacode.data.preprocess import PreprocessConfig, preprocess
    summary = preprocess(PreprocessConfig(["corpus.jsonl.zst"], "out/code", "tokenizer.model",
                                          append_eod=True, workers=8))

The command line (tools/preprocess_data.py, a drop-in for Megatron-LM's) is in `cli`.
"""

from megacode.data.preprocess.pipeline import PreprocessConfig, Summary, preprocess

__all__ = ["PreprocessConfig", "Summary", "preprocess"]

"""Train small Llama 2-style SentencePiece BPE models (tests, benchmarks, CPU smoke runs).

Real runs use Llama 2's own tokenizer.model. Where none can be downloaded, these settings copy
Llama 2's TrainerSpec/NormalizerSpec (read from its tokenizer.model): BPE, byte fallback, identity
normalization, no whitespace removal, digits split, whitespace-only pieces allowed, unk/bos/eos =
0/1/2 and no pad piece. Models are cached under a name that hashes the settings and the text.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

LLAMA2_TRAINER_OPTIONS = dict(
    model_type="bpe",
    byte_fallback=True,
    normalization_rule_name="identity",
    add_dummy_prefix=True,
    remove_extra_whitespaces=False,
    split_digits=True,
    allow_whitespace_only_pieces=True,
    character_coverage=0.9995,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    max_sentence_length=16384,
)


def train_llama_like(
    sentences: Iterable[str], vocab_size: int, output: Path, num_threads: Optional[int] = None, **overrides
) -> Path:
    """Train a BPE model on `sentences` (one training sentence each) and write it to `output`.

    The file appears under its final name only when complete (written to a temporary, renamed).
    """
    import sentencepiece as spm

    options = dict(LLAMA2_TRAINER_OPTIONS, vocab_size=vocab_size, num_threads=num_threads or os.cpu_count() or 1)
    options.update(overrides)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=buf, minloglevel=2, **options)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f"{output.name}.tmp-{os.getpid()}")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, output)
    return output


def cached_llama_like(
    sentences: Sequence[str], vocab_size: int, cache_dir: Path, tag: str = "bpe", **overrides
) -> Path:
    """`train_llama_like` once per (settings, text): returns the cached model when present."""
    key = hashlib.sha256(repr((vocab_size, sorted(overrides.items()), sorted(LLAMA2_TRAINER_OPTIONS.items()))).encode())
    for s in sentences:
        key.update(s.encode("utf-8", "surrogatepass"))
        key.update(b"\0")
    path = Path(cache_dir) / f"{tag}{vocab_size}-{key.hexdigest()[:16]}.model"
    if not path.exists():
        train_llama_like(sentences, vocab_size, path, **overrides)
    return path

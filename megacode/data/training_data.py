"""A run's data from its config: datasets, vocabulary checks, and the train/valid step loaders.

    data.paths (blend with weights) ──> BlendedDataset of PackedDatasets ─┐
    (none: the synthetic token stream)                                    ├─> StepLoader (train)
    data.valid_paths, else the data.split tail of each path ─────────────> StepLoader (valid) or None
    (data.fim.enabled: text components wrapped in FimDataset, megacode/data/fim_dataset.py)

The model's vocabulary is `data.vocab_size`, else the flavor's. A tokenizer with more pieces
than that is a config error here; a dataset token outside it is caught by the loader on the
sample that holds it, naming file, document and offset (the embedding would index out of range).
"""

from __future__ import annotations

import logging
from typing import Optional, Tuple

import torch

from megacode.config import ConfigError, Layout, RunConfig, model_shape
from megacode.data.loader import StepLoader
from megacode.data.synthetic import SyntheticTokens

log = logging.getLogger("megacode")


def model_vocab_size(cfg: RunConfig) -> int:
    """Vocabulary before TP padding: `data.vocab_size`, else the flavor's (or model.shape's)."""
    return model_shape(cfg).vocab_size


def check_tokenizer_vocab(cfg: RunConfig, vocab: int) -> None:
    """A `data.tokenizer_model` with more pieces than the model's vocabulary is a config error."""
    if not cfg.data.tokenizer_model:
        return
    from megacode.tokenizer import load

    tokenizer = load(cfg.data.tokenizer_model)
    if tokenizer.vocab_size > vocab:
        source = "data.vocab_size" if cfg.data.vocab_size is not None else f"flavor {cfg.model.flavor!r}"
        raise ConfigError(f"data.tokenizer_model={cfg.data.tokenizer_model} has {tokenizer.vocab_size} pieces but "
                          f"the model vocabulary is {vocab} ({source}); set data.vocab_size >= "
                          f"{tokenizer.vocab_size} or use a matching flavor")


def sample_counts(cfg: RunConfig, layout: Layout) -> Tuple[int, int]:
    """(train samples, valid samples): every step's global batch; eval_iters batches when validating."""
    num_train = cfg.train.iters * layout.global_batch_size
    validating = cfg.train.eval_interval > 0 and cfg.train.eval_iters > 0
    return num_train, (cfg.train.eval_iters * layout.global_batch_size if validating else 0)


def build_sample_datasets(cfg: RunConfig, layout: Layout):
    """(train, valid) map-style sample datasets; valid is None when there is nothing to validate on.

    Under torch.distributed every rank must call this together (rank 0 builds the index caches).
    """
    vocab = model_vocab_size(cfg)
    num_train, num_valid = sample_counts(cfg, layout)
    if not cfg.data.paths:
        valid = SyntheticTokens(vocab, cfg.data.seq_length, cfg.seed + 1) if num_valid else None
        return SyntheticTokens(vocab, cfg.data.seq_length, cfg.seed), valid
    check_tokenizer_vocab(cfg, vocab)
    from megacode.data.builder import build_datasets
    from megacode.data.fim_dataset import with_fim

    train, valid = build_datasets(cfg.data, cfg.seed, num_train, num_valid)
    return with_fim(cfg.data, train, valid)  # data.fim: Code Llama infilling on whole documents


def _describe(ds) -> str:
    if ds is None or type(ds).__repr__ is not object.__repr__:
        return repr(ds)
    return f"{type(ds).__name__}({len(ds)} samples)"


def build_loaders(cfg: RunConfig, layout: Layout, dp_rank: int, device: torch.device
                  ) -> Tuple[StepLoader, Optional[StepLoader]]:
    """(train, valid) step loaders for this DP rank; valid is None (said once, here) when there is
    no validation data, and the loop then skips validation."""
    train_ds, valid_ds = build_sample_datasets(cfg, layout)
    indexed = bool(cfg.data.paths)
    vocab = model_vocab_size(cfg) if indexed else None  # synthetic ids are < vocab by construction
    common = dict(num_workers=cfg.data.num_workers, backend=cfg.data.loader, vocab_size=vocab)
    train = StepLoader(train_ds, layout, dp_rank, device, name="train", **common)
    valid = None
    if valid_ds is not None:
        span = cfg.train.eval_iters * layout.global_batch_size  # evaluation always reads [0, span)
        valid = StepLoader(valid_ds, layout, dp_rank, device, name="valid",
                           next_position=lambda consumed: (consumed + layout.global_batch_size) % span, **common)
    elif cfg.train.eval_interval > 0:
        why = ("train.eval_iters is 0" if cfg.train.eval_iters <= 0 else
               f"data.valid_paths is empty and data.split={cfg.data.split!r} leaves no validation documents")
        if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:  # once, not per rank
            log.warning("no validation data (%s): validation skipped", why)
    log.info("data: train %s | valid %s | loader %s, %d workers", _describe(train_ds), _describe(valid_ds),
             train.backend, cfg.data.num_workers)
    return train, valid

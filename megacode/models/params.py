"""Parameter counts of the real Megatron-Core model, built on the meta device (no memory)."""

from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist

from megacode.config import CUSTOM, Flavor, RunConfig, get_flavor, model_shape, resolve_layout
from megacode.config.schema import DataConfig, ModelConfig, TrainConfig


def _single_process_group() -> bool:
    """A world of one (gloo) so Megatron's layers can be built outside torchrun; True if made here."""
    if dist.is_initialized():
        return False
    from megacode.distributed import cpu_compat

    cpu_compat.install()
    store = os.path.join(tempfile.mkdtemp(prefix="megacode-pg-"), "store")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    return True


def count_model_parameters(cfg: RunConfig) -> dict:
    """Build the whole model (TP1 PP1) on the meta device; return total and padding counts."""
    from megatron.core import parallel_state

    from megacode.models.llama import build_model_chunk, padded_vocab_size, transformer_config

    made_group = _single_process_group()
    owned_state = not parallel_state.model_parallel_is_initialized()
    try:
        if owned_state:
            parallel_state.initialize_model_parallel(1, 1)
        layout = resolve_layout(cfg, world_size=1)
        config = transformer_config(cfg, layout, use_cpu_initialization=True)
        config.perform_initialization = False
        with torch.device("meta"):
            model = build_model_chunk(cfg, config, None, pre_process=True, post_process=True, use_te=False)
        total = sum(p.numel() for p in model.parameters())
        assert all(p.device.type == "meta" for p in model.parameters()), "a weight was materialised"
        flavor = model_shape(cfg)
        vocab = flavor.vocab_size
        padding_rows = padded_vocab_size(vocab, cfg.model.make_vocab_size_divisible_by, 1) - vocab
        padding = 2 * padding_rows * flavor.hidden_size  # embedding + output layer rows
        return {"total": total - padding, "padding": padding,
                "embedding": vocab * flavor.hidden_size}
    finally:
        if owned_state:
            parallel_state.destroy_model_parallel()
        if made_group:
            dist.destroy_process_group()


def shape_parameter_count(shape: Flavor, make_vocab_size_divisible_by: int = 128) -> int:
    """Exact parameters of the model built for a resolved shape (megacode.config.model_shape),
    vocab padding excluded."""
    cfg = RunConfig(model=ModelConfig(flavor=CUSTOM, shape=shape.shape_config(),
                                      make_vocab_size_divisible_by=make_vocab_size_divisible_by),
                    data=DataConfig(seq_length=128), train=TrainConfig(global_batch_tokens=128))
    return count_model_parameters(cfg)["total"]


def parameter_count(flavor: str) -> int:
    """Exact parameters of a named flavor, vocab padding excluded (DESIGN.md §2)."""
    return shape_parameter_count(get_flavor(flavor))

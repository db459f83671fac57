"""What a run loads, checked before any process group exists (megacode.train, `--check-only` too).

`checkpoint_to_load(cfg)` picks the checkpoint the trainer will load, exactly as it will
(`resolve_load_dir`), and turns the two mistakes a new run makes into one-line ConfigErrors:

- `checkpoint.load=DIR` where DIR holds no checkpoint (yet): the message names the directory and
  what it lacks (the tracker, a complete `iter_*` directory). A job that should start fresh and
  resume once it has saved sets `checkpoint.dir` instead, which may be empty.
- a run whose model (`model.flavor` / `model.shape`, `model.num_layers`, `data.vocab_size`)
  differs from the one stored in the checkpoint's run config: both shapes are named. The RoPE θ
  and the context length are not compared: long-context fine-tuning changes them on purpose.

Only the checkpoint's `common.pt` is read (a small pickle), never a tensor.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Optional

import torch

from megacode.checkpoint.tracker import TRACKER_NAME, incomplete_reason, list_steps, resolve_load_dir, step_dir
from megacode.config import ConfigError, Flavor, ModelConfig, RunConfig, config_from_dict, model_shape
from megacode.config.loader import build_dataclass

COMMON_FILE = "common.pt"
# What decides the weights' shapes and the function they compute.
COMPARED_FIELDS = ("num_layers", "hidden_size", "num_attention_heads", "num_query_groups", "ffn_hidden_size",
                   "vocab_size", "norm_epsilon")


def stored_run_config(tree: dict, where: str) -> RunConfig:
    """The run config saved with a checkpoint. A checkpoint can outlive the schema it was written
    with: if the whole config no longer loads, its model section and data vocabulary suffice."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{where} holds no run config")
    try:
        return config_from_dict(tree)
    except (ConfigError, TypeError):
        pass
    try:
        cfg = RunConfig()
        known = {f.name for f in fields(ModelConfig)}
        cfg.model = build_dataclass(ModelConfig, {k: v for k, v in tree["model"].items() if k in known}, "model")
        for name in ("vocab_size", "seq_length", "tokenizer_model"):
            setattr(cfg.data, name, tree.get("data", {}).get(name, getattr(cfg.data, name)))
        return cfg
    except (ConfigError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"{where}: the stored model config does not load ({err})") from None


def stored_model_shape(ckpt_dir: Path) -> Optional[Flavor]:
    """The model shape a checkpoint's run config resolves to; None when it has none we can read."""
    path = Path(ckpt_dir) / COMMON_FILE
    try:
        tree = torch.load(path, map_location="cpu", weights_only=False)["common"]["config"]
        return model_shape(stored_run_config(tree, str(path)))
    except (OSError, KeyError, TypeError, ConfigError):
        return None


def _what_is_missing(root: Path) -> str:
    steps = list_steps(root)
    if not steps:
        return f"no {TRACKER_NAME} and no iter_* directory"
    newest = step_dir(root, steps[-1])
    return f"no complete iter_* directory ({len(steps)} incomplete; newest {newest.name}: {incomplete_reason(newest)})"


def checkpoint_to_load(cfg: RunConfig) -> Optional[Path]:
    """The checkpoint directory the trainer will load (None: a fresh start), or a ConfigError."""
    ckpt = cfg.checkpoint
    key = "checkpoint.load" if ckpt.load is not None else "checkpoint.dir"
    root = ckpt.load if ckpt.load is not None else ckpt.dir
    if root is None:
        return None
    if ckpt.load is not None and not Path(root).is_dir():
        raise ConfigError(f"checkpoint.load={root} does not exist")
    try:
        target = resolve_load_dir(root, ckpt.load_step)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"{key}={root}, checkpoint.load_step={ckpt.load_step}: {err}") from None
    if target is None:
        if ckpt.load is not None:
            raise ConfigError(f"checkpoint.load={root} holds no checkpoint: {_what_is_missing(Path(root))} "
                              f"(to start fresh and resume once a checkpoint exists, set checkpoint.dir instead)")
        return None
    check_model_matches(cfg, target, key)
    return target


def check_model_matches(cfg: RunConfig, target: Path, key: str = "checkpoint.load") -> None:
    """ConfigError naming both shapes when the run's model differs from the checkpoint's."""
    stored = stored_model_shape(target)
    if stored is None:
        return
    ours = model_shape(cfg)
    diffs = [f"{name} {getattr(ours, name)} vs {getattr(stored, name)}" for name in COMPARED_FIELDS
             if getattr(ours, name) != getattr(stored, name)]
    if diffs:
        raise ConfigError(f"the run's model {ours.describe()} differs from the model of {key}={target} "
                          f"{stored.describe()}: {', '.join(diffs)} (run vs checkpoint); give the run the "
                          f"checkpoint's model section (an import writes it to model.yaml)")

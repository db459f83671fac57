"""Save and load training state with Megatron-Core `dist_checkpointing` (torch_dist format).

A checkpoint holds: the model (sharded tensors with global keys, so any TP/PP/VP/DP layout
can load it), the optimizer (distributed optimizer in its `fully_reshardable` form, also
layout-independent), the LR scheduler, the step and consumed samples, the run config and
layout, and each rank's RNG state (restored only when the layout is unchanged).
"""

from __future__ import annotations

import functools
import logging
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state, tensor_parallel
from megatron.core.dist_checkpointing.mapping import ShardedObject

from megacode.checkpoint.async_save import BackgroundSave
from megacode.checkpoint.tracker import resolve_load_dir  # noqa: F401 (re-exported: where loads start)
from megacode.checkpoint.tracker import check_shards, mark_complete, step_dir, write_tracker
from megacode.config import Layout

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Where a save can be interrupted, in order (fault-injection tests kill ranks at each of them).
# "scheduled" (an asynchronous save's writer started, training goes on) exists only with
# checkpoint.async_save; there, the points after it run at the save's finalization.
SAVE_POINTS = ("begin", "scheduled", "written", "verified", "marked", "tracked")


class CheckpointError(RuntimeError):
    """A save finished writing but the checkpoint is not complete; the message names the file."""
OPTIMIZER_SHARDING = {"distrib_optim_sharding_type": "fully_reshardable"}


@dataclass
class TrainState:
    """What the loop needs back from a checkpoint besides weights and optimizer."""

    step: int = 0
    consumed_train_samples: int = 0
    consumed_valid_samples: int = 0
    extra: dict = field(default_factory=dict)


def _layout_key(layout: Layout) -> dict:
    return {"tp": layout.tp, "pp": layout.pp, "vp": layout.vp, "dp": layout.dp}


def _rng_state() -> dict:
    return {
        "random": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _rng_sharded_object(layout: Layout, state: Optional[dict]) -> ShardedObject:
    """One RNG state per (PP, TP, DP) rank: the whole grid is saved, each rank writes its cell."""
    ranks = (parallel_state.get_pipeline_model_parallel_rank(),
             parallel_state.get_tensor_model_parallel_rank(),
             parallel_state.get_data_parallel_rank())
    return ShardedObject("rng_state", state, (layout.pp, layout.tp, layout.dp), ranks, replica_id=0)


def _unwrap(chunk):
    """The GPTModel inside a DDP wrapper: checkpoint keys carry no `module.` prefix."""
    return getattr(chunk, "module", chunk)


def _model_sharded_state_dict(model: list) -> dict:
    if len(model) == 1:
        return {"model": _unwrap(model[0]).sharded_state_dict()}
    return {f"model{i}": _unwrap(chunk).sharded_state_dict() for i, chunk in enumerate(model)}


def _model_part(sharded: dict) -> dict:
    """The model entries, still nested per chunk: with virtual stages, chunks share local key
    names (`decoder.layers.0...`), so flattening them would drop all but one chunk's tensors."""
    return {key: value for key, value in sharded.items() if key.startswith("model")}


def _materialize_optimizer_state(optimizer) -> None:
    """Give every Adam parameter its state before a load replaces it in place.

    Without apex/TE, Megatron-Core has no state-initialising hook, and its distributed
    optimizer cannot describe an empty state for loading. One step on zero gradients at LR 0
    creates `exp_avg`, `exp_avg_sq` and `step` without changing any weight.
    """
    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        torch_opt = inner.optimizer
        if torch_opt.state:
            continue
        saved_lr = [group["lr"] for group in torch_opt.param_groups]
        for group in torch_opt.param_groups:
            group["lr"] = 0.0
            for param in group["params"]:
                param.grad = torch.zeros_like(param)
        torch_opt.step()
        torch_opt.zero_grad(set_to_none=True)
        for group, lr in zip(torch_opt.param_groups, saved_lr):
            group["lr"] = lr
        if getattr(inner, "init_state_fn", None) is None:
            inner.init_state_fn = lambda *args: None


def build_sharded_state_dict(model: list, optimizer, scheduler, state: TrainState, layout: Layout,
                             config_dict: dict, is_loading: bool, with_optimizer: bool = True,
                             with_rng: bool = True) -> dict:
    sharded = _model_sharded_state_dict(model)
    if with_optimizer and optimizer is not None:
        if is_loading:
            _materialize_optimizer_state(optimizer)
        sharded["optimizer"] = optimizer.sharded_state_dict(
            _model_part(sharded), is_loading=is_loading, metadata=OPTIMIZER_SHARDING)
    if with_rng:
        sharded["rng_state"] = _rng_sharded_object(layout, None if is_loading else _rng_state())
    sharded["common"] = {
        "format_version": FORMAT_VERSION,
        "step": state.step,
        "consumed_train_samples": state.consumed_train_samples,
        "consumed_valid_samples": state.consumed_valid_samples,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "config": config_dict,
        "layout": _layout_key(layout),
        "extra": state.extra,
    }
    return sharded


def save_checkpoint(root: str | Path, model: list, optimizer, scheduler, state: TrainState,
                    layout: Layout, config_dict: dict,
                    on_point: Optional[Callable[[str], None]] = None,
                    background: Optional[BackgroundSave] = None,
                    on_complete: Optional[Callable[[Path], None]] = None) -> Path:
    """All ranks call this. The tracker moves to this step only after every rank finished writing,
    rank 0 found every shard at full length and wrote the completion marker (tracker.py); then
    `on_complete(directory)` runs on every rank.

    With `background` (checkpoint.async_save) the shards are written by a forked process and this
    returns as soon as it started; everything from the barrier on runs when `background.poll()` or
    `.wait()` finds the write finished on every rank (async_save.py). `background` must have no
    save pending. `on_point(name)` is called at each of SAVE_POINTS (test fault hooks;
    "scheduled" only with `background`)."""
    if background is not None and background.pending is not None:
        raise RuntimeError(f"checkpoint {background.pending} is still being written: wait() for it first")
    point = on_point or (lambda name: None)
    root = Path(root)
    target = step_dir(root, state.step)
    rank0 = dist.get_rank() == 0
    if rank0:
        root.mkdir(parents=True, exist_ok=True)
        if target.exists():  # leftovers of a save that died: never the latest, safe to replace
            shutil.rmtree(target)
        target.mkdir()
    dist.barrier()
    point("begin")
    sharded = build_sharded_state_dict(model, optimizer, scheduler, state, layout, config_dict, is_loading=False)
    finish = functools.partial(_complete_save, root, target, state.step, point)
    if background is None:
        dist_checkpointing.save(sharded, str(target))
        finish()
        if on_complete is not None:
            on_complete(target)
        return target
    request = dist_checkpointing.save(sharded, str(target), async_sharded_save=True)
    background.start(request, target, finish, on_complete)
    point("scheduled")
    return target


def _complete_save(root: Path, target: Path, step: int, point: Callable[[str], None]) -> None:
    """All ranks, once every rank's shards are written: check, mark complete, move the tracker."""
    rank0 = dist.get_rank() == 0
    point("written")
    dist.barrier()
    problem, sizes = check_shards(target) if rank0 else (None, {})
    verdict = [problem]
    dist.broadcast_object_list(verdict, src=0)
    if verdict[0] is not None:
        raise CheckpointError(f"checkpoint {target} is incomplete after saving: {verdict[0]}")
    point("verified")
    if rank0:
        mark_complete(target, step, dist.get_world_size(), sizes)
    point("marked")
    if rank0:
        write_tracker(root, step)
    point("tracked")
    dist.barrier()


def read_common(ckpt_dir: str | Path) -> dict:
    """The non-sharded part (step, config, layout, ...) without touching any tensor."""
    return dist_checkpointing.load_common_state_dict(str(ckpt_dir))["common"]


def load_checkpoint(ckpt_dir: str | Path, model: list, optimizer, scheduler, layout: Layout,
                    config_dict: dict, finetune: bool = False) -> TrainState:
    """Load into the already-built model (and optimizer/scheduler unless `finetune`).

    `finetune=True` starts a new recipe stage: weights only, fresh optimizer, schedule and step.
    """
    common = read_common(ckpt_dir)
    same_layout = common["layout"] == _layout_key(layout)
    with_optimizer = not finetune and optimizer is not None
    with_rng = not finetune and same_layout
    if not finetune and not same_layout and dist.get_rank() == 0:
        log.info("checkpoint layout %s differs from run layout %s: model and optimizer are resharded, "
                 "RNG states start fresh", common["layout"], _layout_key(layout))
    template = build_sharded_state_dict(model, optimizer, scheduler, TrainState(), layout, config_dict,
                                        is_loading=True, with_optimizer=with_optimizer, with_rng=with_rng)
    template.pop("common")
    loaded = dist_checkpointing.load(template, str(ckpt_dir))
    if len(model) == 1:
        _unwrap(model[0]).load_state_dict(loaded["model"])
    else:
        for i, chunk in enumerate(model):
            _unwrap(chunk).load_state_dict(loaded[f"model{i}"])
    if finetune:
        return TrainState()
    if with_optimizer:
        optimizer.load_state_dict(loaded["optimizer"])
    if scheduler is not None and common["scheduler"] is not None:
        # Megatron's load_state_dict *adds* the saved step count (step(increment=num_steps)):
        # right for a fresh scheduler only, so a rollback into a used one starts it from zero.
        scheduler.num_steps = 0
        scheduler.load_state_dict(common["scheduler"])
    if with_rng:
        _set_rng_state(loaded["rng_state"])
    return TrainState(step=common["step"], consumed_train_samples=common["consumed_train_samples"],
                      consumed_valid_samples=common["consumed_valid_samples"], extra=common.get("extra", {}))

"""DDP wrapping, AdamW (Megatron's distributed optimizer) and the LR schedule.

Recipe defaults (DESIGN.md §1): AdamW β=(0.9, 0.95), eps 1e-5, weight decay 0.1, clip 1.0,
linear warm-up then cosine decay to peak/30. All of it is Megatron-Core's own code; two seams
keep the host from waiting on the device mid-step (a training step reads device values once,
megacode.training.step_stats): the per-token gradient scaling and the gradient norm are
Megatron's, minus the host reads Megatron-Core 0.16.1 makes in them (`if num_tokens > 0`,
`total_norm.item()`). Both give bit-identical results (tests/training/test_host_syncs.py).
"""

from __future__ import annotations

from typing import Optional

import torch
from megatron.core import parallel_state
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.transformer import TransformerConfig

from megacode.config import RunConfig, check_schedule


def wrap_ddp(chunks: list, config: TransformerConfig, cfg: RunConfig) -> list[DistributedDataParallel]:
    """Megatron DDP around each chunk: contiguous fp32 grad buffers, reduce-scatter for the
    distributed optimizer. Overlapping the reduce with backward needs CUDA streams; on gloo the
    reduce runs after backward."""
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=cfg.parallel.overlap_grad_reduce and torch.cuda.is_available(),
        use_distributed_optimizer=cfg.parallel.distributed_optimizer,
        check_for_nan_in_grad=False,
        bucket_size=None,
    )
    wrapped = []
    for index, chunk in enumerate(chunks):
        wrapped.append(DistributedDataParallel(
            config=config, ddp_config=ddp_config, module=chunk,
            # Only the first chunk's buckets start the reduce early (Megatron-LM convention).
            disable_bucketing=index > 0))
    return wrapped


def finalize_grads(model: list, num_tokens: Optional[torch.Tensor] = None, pg_collection=None,
                   force_all_reduce: Optional[bool] = False) -> None:
    """Megatron's `finalize_model_grads` (DP reduce, embedding and norm all-reduces), then its
    last part, the division of every gradient by the global token count, without its host read.

    Megatron scales by `1 / num_tokens` only `if num_tokens > 0`: a device-to-host read in every
    step. The clamp gives the same gradients (a factor of exactly 1 when no token counted).
    """
    finalize_model_grads(model, None, pg_collection=pg_collection, force_all_reduce=force_all_reduce)
    if num_tokens is None:
        return
    from megatron.core.pipeline_parallel.utils import get_pp_last_rank

    if pg_collection is not None:
        pp_group, dp_cp_group = pg_collection.pp, pg_collection.dp_cp
    else:
        pp_group = parallel_state.get_pipeline_model_parallel_group()
        dp_cp_group = parallel_state.get_data_parallel_group(with_context_parallel=True)
    # The count lives on the last stage only (as in Megatron): broadcast it, then sum over DP.
    torch.distributed.broadcast(num_tokens, src=get_pp_last_rank(pp_group), group=pp_group)
    torch.distributed.all_reduce(num_tokens, group=dp_cp_group)
    scaling = 1.0 / num_tokens.clamp(min=1)  # [] float32, on the device
    for chunk in model:
        chunk.scale_gradients(scaling)


def grad_norm_squared(optimizer) -> Optional[torch.Tensor]:
    """`[1]` float32 Σ‖g‖² over the optimizer's grad-stats group, left on the device: Megatron's
    `get_grad_norm()` (2-norm, `get_grad_norm_fp32`) up to its `.item()`; the norm is this value
    to the power 1/2, taken on the host after the step's one read. None where that path does not
    apply exactly (FSDP DTensor grads, chained optimizers with different groups): the caller then
    asks `optimizer.get_grad_norm()`, one host read more.
    """
    from megatron.core.optimizer import clip_grads
    from megatron.core.utils import get_data_parallel_group_if_dtensor, local_multi_tensor_l2_norm

    inner = getattr(optimizer, "chained_optimizers", [optimizer])
    if len(inner) == 1:
        grads, group = inner[0].get_main_grads_for_grad_norm(), inner[0].get_grad_stats_parallel_group()
    elif optimizer.grads_states_parallel_group_is_shared():
        grads = [g for opt in inner for g in opt.get_main_grads_for_grad_norm()]
        group = optimizer.get_grad_stats_parallel_group()
    else:
        return None
    if any(get_data_parallel_group_if_dtensor(g, None) is not None for g in grads):
        return None
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if not grads:
        norm = torch.zeros(1, dtype=torch.float, device=device)
    elif clip_grads.l2_norm_impl is local_multi_tensor_l2_norm:
        # Megatron's fallback without TE/apex: the same norms, stacked on the device instead of
        # gathered through `torch.tensor(list)` and `float()` (a host read per tensor).
        norm = torch.norm(torch.stack([torch.norm(g) for g in grads])).reshape(1).float()
    else:  # TE's or apex's fused multi-tensor kernel, exactly as Megatron calls it
        overflow = torch.zeros(1, dtype=torch.int, device=device)
        norm, _ = clip_grads.multi_tensor_applier(clip_grads.l2_norm_impl, overflow, [grads], False)
    total = norm ** 2.0
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM, group=group)
    return total


def attach_schedule_hooks(config: TransformerConfig, model: list[DistributedDataParallel]) -> None:
    """The callbacks Megatron's schedules call: grad sync control and grad finalisation."""
    config.finalize_model_grads_func = finalize_grads
    config.no_sync_func = [chunk.no_sync for chunk in model] if len(model) > 1 else model[0].no_sync
    if model[0].ddp_config.overlap_grad_reduce:
        config.grad_sync_func = [chunk.start_grad_sync for chunk in model] if len(model) > 1 \
            else model[0].start_grad_sync


def build_optimizer(model: list, cfg: RunConfig, params_dtype: torch.dtype):
    opt = cfg.optim
    optimizer_config = OptimizerConfig(
        optimizer="adam",  # decoupled weight decay: AdamW
        lr=opt.lr,
        min_lr=opt.min_lr,
        weight_decay=opt.weight_decay,
        adam_beta1=opt.adam_beta1,
        adam_beta2=opt.adam_beta2,
        adam_eps=opt.adam_eps,
        clip_grad=opt.clip_grad,
        use_distributed_optimizer=cfg.parallel.distributed_optimizer,
        bf16=params_dtype == torch.bfloat16,
        params_dtype=params_dtype,
    )
    return get_megatron_optimizer(optimizer_config, model)


def build_scheduler(optimizer, cfg: RunConfig) -> OptimizerParamScheduler:
    sched = cfg.schedule
    decay_iters = check_schedule(cfg)
    warmup = sched.warmup_iters
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=cfg.optim.lr,
        min_lr=cfg.optim.min_lr,
        lr_warmup_steps=warmup,
        lr_decay_steps=max(decay_iters, 1),
        lr_decay_style=sched.style,
        start_wd=cfg.optim.weight_decay,
        end_wd=cfg.optim.weight_decay,
        wd_incr_steps=max(decay_iters, 1),
        wd_incr_style="constant",
        # On resume the checkpoint's schedule wins unless it disagrees (then it errors).
        use_checkpoint_opt_param_scheduler=True,
    )

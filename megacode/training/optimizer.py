"""DDP wrapping, AdamW (Megatron's distributed optimizer) and the LR schedule.

Recipe defaults (DESIGN.md §1): AdamW β=(0.9, 0.95), eps 1e-5, weight decay 0.1, clip 1.0,
linear warm-up then cosine decay to peak/30. All of it is Megatron-Core's own code.
"""

from __future__ import annotations

import torch
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


def attach_schedule_hooks(config: TransformerConfig, model: list[DistributedDataParallel]) -> None:
    """The callbacks Megatron's schedules call: grad sync control and grad finalisation."""
    config.finalize_model_grads_func = finalize_model_grads
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

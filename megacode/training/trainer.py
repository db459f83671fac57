"""The training loop: build everything for a run, step with Megatron's schedules, evaluate, save.

One optimizer step: every rank takes its micro-batches by global sample index, Megatron-Core's
`get_forward_backward_func` runs 1F1B (or interleaved 1F1B with virtual stages, or no
pipelining) with DDP gradient reduction, the (distributed) optimizer clips and steps unless the
step's loss or gradient norm is bad (megacode.resilience.numerics), the scheduler advances.
The host waits for the device once per step: the global-batch loss, the gradient norm and every
rank's stop vote (preemption signal, time budget) arrive in one read
(megacode.training.step_stats); between steps all ranks act on the same votes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func

from megacode.checkpoint.async_save import BackgroundSave
from megacode.checkpoint.dist_ckpt import TrainState, load_checkpoint, resolve_load_dir, save_checkpoint
from megacode.checkpoint.retention import prune
from megacode.config import Layout, RunConfig, model_shape
from megacode.data.loader import StepLoader
from megacode.models.llama import build_model, transformer_config
from megacode.resilience import inject
from megacode.resilience import phase as phases
from megacode.resilience.control import FaultControl
from megacode.resilience.exit_codes import EXIT_OK, EXIT_REQUEUE
from megacode.resilience.numerics import NumericsGuard, UpdateOutcome, guarded_update
from megacode.training.batches import chunk_iterators, step_microbatches
from megacode.training.logger import MetricsLogger
from megacode.training.metrics import flops_per_token, memory_gib, pipeline_bubble, throughput
from megacode.training.optimizer import (attach_schedule_hooks, build_optimizer, build_scheduler, grad_norm_squared,
                                         wrap_ddp)
from megacode.training.profiling import StepProfiler, step_context
from megacode.training.step import forward_step, reduce_step_loss
from megacode.training.step_stats import read_step_stats

log = logging.getLogger("megacode")


@dataclass
class StepResult:
    step: int
    loss: Optional[float]
    """Global-batch mean loss; None for a batch a rollback dropped (never computed)."""
    grad_norm: Optional[float]
    lr: float
    seconds: float
    skipped: bool = False
    problems: list = field(default_factory=list)
    """Why the update was withheld (NaN/Inf/spike); empty for a good step."""
    finished_at: float = 0.0
    """`time.time()` when the step ended: differences between steps are the loop's whole
    iteration time, logging and the stop check included (tools/bench_train.py)."""
    stop_votes: Optional[list] = None
    """Every rank's stop vote summed, read with the step's statistics; None for a step a rollback
    dropped (the loop then asks on its own)."""
    writers_running: Optional[int] = None
    """Ranks whose background checkpoint writer still ran, read with the step's statistics; None
    for a step a rollback dropped (BackgroundSave.poll then asks on its own)."""


@dataclass
class Run:
    cfg: RunConfig
    layout: Layout
    model: list
    optimizer: object
    scheduler: object
    train_data: object
    valid_data: object
    state: TrainState
    device: torch.device
    logger: MetricsLogger
    history: list = field(default_factory=list)
    guard: Optional[NumericsGuard] = None
    faults: Optional[FaultControl] = None
    step_losses: list = field(default_factory=list)
    """The last step's per-micro-batch losses (what a bad-step record is made from)."""
    saves: BackgroundSave = field(default_factory=lambda: BackgroundSave(before_write=inject.before_background_write))
    """The checkpoint being written in the background (checkpoint.async_save), if any."""


def build_datasets(cfg: RunConfig, layout: Layout):
    """(train, valid) step loaders over the indexed-dataset blend of `data.paths` (the synthetic
    stream when none is given); valid is None when there is no validation data."""
    from megacode.data.training_data import build_loaders

    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return build_loaders(cfg, layout, parallel_state.get_data_parallel_rank(), device)


def build_run(cfg: RunConfig, layout: Layout, load_dir: Optional[Path] = None) -> Run:
    """Everything for a run; the checkpoint is `load_dir` (megacode.checkpoint.preflight chose it
    before launch) or, when None, whichever `checkpoint.load` / `checkpoint.dir` holds."""
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    config = transformer_config(cfg, layout)
    chunks = build_model(cfg, layout)
    model = wrap_ddp(chunks, config, cfg)
    attach_schedule_hooks(config, model)
    optimizer = build_optimizer(model, cfg, config.params_dtype)
    scheduler = build_scheduler(optimizer, cfg)
    train_data, valid_data = build_datasets(cfg, layout)
    logger = MetricsLogger(cfg.logging.dir, enabled=torch.distributed.get_rank() == 0)
    run = Run(cfg, layout, model, optimizer, scheduler, train_data, valid_data, TrainState(), device, logger)
    run.guard = NumericsGuard(cfg.fault)
    _maybe_load(run, load_dir)
    return run


def _maybe_load(run: Run, target: Optional[Path]) -> None:
    ckpt = run.cfg.checkpoint
    root = ckpt.load or ckpt.dir
    if root is None:
        return
    target = target or resolve_load_dir(root, ckpt.load_step)
    if target is None:
        if ckpt.load is not None:
            raise FileNotFoundError(f"checkpoint.load={ckpt.load} holds no checkpoint "
                                    f"(no latest_checkpointed_iteration.txt)")
        return
    run.state = load_checkpoint(target, run.model, run.optimizer, run.scheduler, run.layout,
                                run.cfg.to_dict(), finetune=ckpt.finetune)
    log.info("loaded %s%s: resuming at step %d, %d samples consumed", target,
             " (weights only, new stage)" if ckpt.finetune else "", run.state.step,
             run.state.consumed_train_samples)
    run.guard.load_state_dict(run.state.extra.get("numerics"))


def _forward_backward(run: Run, dataset, consumed: int, forward_only: bool, step_func=forward_step) -> list:
    layout = run.layout
    if isinstance(dataset, StepLoader):  # prepared a step ahead in the background
        batches = dataset.get(consumed)
    else:
        batches = step_microbatches(dataset, consumed, layout, parallel_state.get_data_parallel_rank(), run.device)
    return get_forward_backward_func()(
        forward_step_func=step_func,
        data_iterator=chunk_iterators(batches, len(run.model)),
        model=run.model,
        num_microbatches=layout.num_microbatches,
        seq_length=run.cfg.data.seq_length,
        micro_batch_size=layout.micro_batch_size,
        forward_only=forward_only,
    )


def train_step(run: Run) -> StepResult:
    """One optimizer step; a bad one (NaN/Inf/spike, numerics.py) leaves weights and optimizer
    state untouched but still moves the data position past its batch."""
    start = time.perf_counter()
    step, consumed = run.state.step + 1, run.state.consumed_train_samples
    if run.faults is not None:
        run.faults.phase(phases.STEP, step)
    if run.guard.is_dropped(consumed):  # a rollback took this batch out of the data stream
        return _advance(run, start, None, None, applied=False)
    for chunk in run.model:
        chunk.train()
        chunk.zero_grad_buffer()
    run.optimizer.zero_grad()
    poison = inject.poison_for(step)
    step_func = inject.poisoned(forward_step, poison) if poison else forward_step
    run.step_losses = _forward_backward(run, run.train_data, consumed, forward_only=False, step_func=step_func)
    if run.faults is not None:
        run.faults.phase(phases.OPTIMIZER, step)
    overflow = run.optimizer.prepare_grads()  # fp16 loss-scaler overflow: Megatron skips and rescales
    norm_squared = None if overflow else grad_norm_squared(run.optimizer)
    stats = read_step_stats(run.step_losses, norm_squared, run.faults.stop_flags() if run.faults else None,
                            run.device, writing=run.saves.writing_here())  # the step's one host synchronization
    if overflow:
        outcome = UpdateOutcome(False, None)
    else:
        grad_norm = stats.grad_norm if norm_squared is not None else float(run.optimizer.get_grad_norm())
        outcome = guarded_update(run.optimizer, run.guard, stats.loss, grad_norm, step)
    if outcome.applied:
        run.scheduler.step(increment=1)
    return _advance(run, start, stats.loss, outcome.grad_norm, outcome.applied, outcome.problems, stats.stop,
                    stats.writers_running)


def _advance(run: Run, start: float, loss, grad_norm, applied: bool, problems=(), stop_votes=None,
             writers_running=None) -> StepResult:
    run.state.step += 1
    run.state.consumed_train_samples += run.layout.global_batch_size
    lr = run.optimizer.param_groups[0]["lr"]
    return StepResult(run.state.step, loss, grad_norm, lr, time.perf_counter() - start, skipped=not applied,
                      problems=list(problems), finished_at=time.time(), stop_votes=stop_votes,
                      writers_running=writers_running)


@torch.no_grad()
def evaluate(run: Run) -> Optional[float]:
    """Mean loss over `train.eval_iters` fixed validation batches (the same ones every time);
    None without validation data (build_datasets said so once)."""
    if run.valid_data is None:
        return None
    for chunk in run.model:
        chunk.eval()
    if run.faults is not None:
        run.faults.phase(phases.EVAL, run.state.step)
    loss_sum, token_sum = 0.0, 0
    for index in range(run.cfg.train.eval_iters):
        losses = _forward_backward(run, run.valid_data, index * run.layout.global_batch_size, forward_only=True)
        loss, tokens = reduce_step_loss(losses, run.device)
        loss_sum += loss * tokens
        token_sum += tokens
    return loss_sum / max(token_sum, 1)


def _log_step(run: Run, result: StepResult, flops_token: float) -> None:
    tokens = run.layout.global_batch_size * run.cfg.data.seq_length
    speed = throughput(tokens, result.seconds, run.layout.world_size, flops_token)
    values = {"loss": result.loss, "lr": result.lr, "grad_norm": result.grad_norm,
              "tokens_per_s_per_gpu": speed.tokens_per_s_per_gpu, "tflops_per_gpu": speed.tflops_per_gpu,
              "mfu": speed.mfu, "step_s": result.seconds, **memory_gib()}
    if result.skipped:
        values["skipped"] = 1
    if run.guard is not None and run.guard.bad_total:
        values["bad_steps"] = run.guard.bad_total
    run.logger.step(result.step, values)


def save(run: Run) -> None:
    """Save this step. With `checkpoint.async_save` the shards are written in the background and
    the save completes (tracker, retention) at a later `run.saves.poll()` or `wait()`; a save
    still in flight is waited for first."""
    ckpt = run.cfg.checkpoint
    step, rank = run.state.step, torch.distributed.get_rank()
    if run.faults is not None:
        run.faults.phase(phases.SAVE, step)
    run.saves.wait()
    run.state.extra["numerics"] = run.guard.state_dict()
    start = time.perf_counter()
    path = save_checkpoint(ckpt.dir, run.model, run.optimizer, run.scheduler, run.state, run.layout,
                           run.cfg.to_dict(), on_point=lambda point: inject.save_point(rank, step, point),
                           background=run.saves if ckpt.async_save else None,
                           on_complete=lambda path: _saved(run, path, start))
    if ckpt.async_save:
        log.info("checkpoint %s: training resumes after %.3f s, the shards are written in the background",
                 path.name, time.perf_counter() - start)


def _saved(run: Run, path: Path, start: float) -> None:
    """Every rank, once `path` is complete and the latest: retention may now delete older ones."""
    ckpt = run.cfg.checkpoint
    log.info("saved checkpoint %s %s %.3f s", path, "completed in the background after" if ckpt.async_save else "in",
             time.perf_counter() - start)
    if torch.distributed.get_rank() == 0 and ckpt.keep_last:
        prune(ckpt.dir, ckpt.keep_last, ckpt.keep_every)


def train(run: Run, faults: Optional[FaultControl] = None) -> list[StepResult]:
    """Run until `train.iters`; save on the interval and at the end. Stop early, after saving,
    when all ranks agree on a preemption signal or the time budget; handle bad steps per
    `fault.on_bad_step`. Returns this process's steps (a rollback repeats some); `faults.exit_code`
    says how the run ended (megacode.resilience.exit_codes)."""
    cfg = run.cfg
    faults = run.faults = faults or run.faults or FaultControl.passive(cfg)
    flops_token = flops_per_token(model_shape(cfg), cfg.data.seq_length)
    log.info("layout TP%d PP%d VP%s DP%d | %d micro-batches of %d per step | pipeline bubble %.1f%%",
             run.layout.tp, run.layout.pp, run.layout.vp, run.layout.dp, run.layout.num_microbatches,
             run.layout.micro_batch_size,
             100 * pipeline_bubble(run.layout.pp, run.layout.num_microbatches, run.layout.vp))
    ran = 0
    saved_at = run.state.step
    profiler = StepProfiler.from_config(cfg.logging, torch.distributed.get_rank(), run.device)
    while run.state.step < cfg.train.iters:
        with step_context(profiler, run.state.step + 1):  # logging.profile; nothing when off
            result = train_step(run)
        run.history.append(result)
        ran += 1
        if result.step % cfg.logging.interval == 0 or result.problems:
            _log_step(run, result, flops_token)
        if result.problems:
            run.saves.wait()  # a rollback resumes from the latest checkpoint: finish the one in flight
            action = faults.bad_step(run, result, run.step_losses)
            if action == "stop":
                return run.history
            if action == "rollback":
                saved_at = run.state.step
                continue
        if cfg.train.eval_interval and result.step % cfg.train.eval_interval == 0 and run.valid_data is not None:
            run.logger.step(result.step, {"loss": evaluate(run)}, prefix="valid")
        if cfg.checkpoint.dir and cfg.checkpoint.interval and result.step % cfg.checkpoint.interval == 0:
            save(run)
            saved_at = result.step
        inject.after_step(result.step)
        if cfg.train.exit_interval and ran >= cfg.train.exit_interval:
            break
        faults.phase(phases.IDLE, result.step)
        stop = faults.stop_reason(run.device, result.stop_votes)  # a signal may have reached only some ranks
        run.saves.poll(result.writers_running)  # completes a background save every rank has written
        if stop is not None:
            if cfg.checkpoint.dir and saved_at != run.state.step:
                save(run)
            run.saves.wait()
            where = f"saved iter_{run.state.step:07d}" if cfg.checkpoint.dir else "no checkpoint.dir: nothing saved"
            faults.finish(EXIT_REQUEUE, f"{stop}; {where}")
            return run.history
    if cfg.checkpoint.dir and cfg.checkpoint.save_at_end and saved_at != run.state.step:
        save(run)
    run.saves.wait()
    faults.finish(EXIT_OK, f"finished at step {run.state.step}")
    return run.history

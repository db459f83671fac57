#!/usr/bin/env python
"""The baseline of tools/bench_train.py: a bare Megatron-Core training loop over the same model.

    torchrun --nproc-per-node N tools/bench_train_bare.py --config FILE --out TIMES.json [key=value ...]

What megacode.train builds, built the same way (megacode.models.llama for the model and its
TransformerConfig, megacode.training.optimizer for DDP, the distributed optimizer and the LR
schedule, megacode.training.step for the per-token loss), then the loop a Megatron-Core user
writes: zero the grad buffers, `get_forward_backward_func()` over `num_microbatches` micro-
batches, `optimizer.step()` (Megatron's own: grad norm, clip, Adam), `scheduler.step()`.

No data loader, no loss reduction, no numerics guard, no logging, no checkpoints, no fault
handling: the micro-batches of the first step are read once (from `data.paths` with megacode's
dataset builder, so the tokens are the same kind megacode trains on; random tokens without data
paths), kept on the device and reused every step.
Rank 0 writes the wall-clock time at which each step finished (`time.time()`, as megacode's
history does), so the driver times both loops the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))


def fixed_batches(cfg, layout, device) -> list:
    """This rank's micro-batches of the first step, `[b, s]` tensors on `device`."""
    import torch
    from megatron.core import parallel_state

    from megacode.config import model_shape
    from megacode.data.training_data import build_sample_datasets
    from megacode.training.batches import position_ids, step_microbatches

    if cfg.data.paths:
        dataset, _ = build_sample_datasets(cfg, layout)
        return step_microbatches(dataset, 0, layout, parallel_state.get_data_parallel_rank(), device)
    num_microbatches, micro_batch_size = layout.num_microbatches, layout.micro_batch_size
    seq_length, vocab = cfg.data.seq_length, model_shape(cfg).vocab_size
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(num_microbatches):
        tokens = torch.randint(0, vocab, (micro_batch_size, seq_length + 1), generator=generator)
        batches.append({"tokens": tokens[:, :-1].contiguous().to(device),
                        "labels": tokens[:, 1:].contiguous().to(device),
                        "loss_mask": torch.ones(micro_batch_size, seq_length, device=device),
                        "position_ids": position_ids(micro_batch_size, seq_length, device)})
    return batches


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True, help="JSON file for rank 0's step end times")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"megatron\..*")

    import torch
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megacode.config import load_config, resolve_layout
    from megacode.distributed.init import destroy, init_model_parallel, init_process_group, world_size_from_env
    from megacode.models.llama import build_model, transformer_config
    from megacode.training.batches import chunk_iterators
    from megacode.training.optimizer import attach_schedule_hooks, build_optimizer, build_scheduler, wrap_ddp
    from megacode.training.step import forward_step

    cfg = load_config(args.config, args.overrides)
    layout = resolve_layout(cfg, world_size_from_env())
    init_process_group(cfg.parallel)
    init_model_parallel(layout, cfg.seed, cfg.parallel.timeout_minutes)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")

    config = transformer_config(cfg, layout)  # as megacode.training.trainer.build_run does
    model = wrap_ddp(build_model(cfg, layout), config, cfg)
    attach_schedule_hooks(config, model)
    optimizer = build_optimizer(model, cfg, config.params_dtype)
    scheduler = build_scheduler(optimizer, cfg)
    batches = fixed_batches(cfg, layout, device)

    ends = []
    for _ in range(cfg.train.iters):
        for chunk in model:
            chunk.zero_grad_buffer()
        optimizer.zero_grad()
        get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=chunk_iterators(batches, len(model)), model=model,
            num_microbatches=layout.num_microbatches, seq_length=cfg.data.seq_length,
            micro_batch_size=layout.micro_batch_size, forward_only=False)
        updated, _grad_norm, _ = optimizer.step()
        if updated:
            scheduler.step(increment=1)
        ends.append(time.time())
    if torch.distributed.get_rank() == 0:
        with open(args.out, "w") as handle:
            json.dump({"finished_at": ends}, handle)
    destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())

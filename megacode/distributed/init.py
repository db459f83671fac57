"""Process groups: NCCL on GPUs, gloo on CPU, then Megatron's TP/PP/VP/DP groups and seeds.

Launched under torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the environment);
a single process without torchrun runs as a world of one.
"""

from __future__ import annotations

import datetime
import os
import random

import numpy as np
import torch
import torch.distributed as dist

from megacode.config import Layout, ParallelConfig
from megacode.distributed import cpu_compat


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_from_env() -> int:
    return int(os.environ.get("RANK", "0"))


def init_process_group(parallel: ParallelConfig) -> None:
    """Start torch.distributed (idempotent); a lone process gets a world of one."""
    if dist.is_initialized():
        return
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    else:
        cpu_compat.install()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    dist.init_process_group(
        backend="nccl" if use_cuda else "gloo",
        rank=rank_from_env(),
        world_size=world_size_from_env(),
        timeout=datetime.timedelta(minutes=parallel.timeout_minutes),
    )


def init_model_parallel(layout: Layout, seed: int, timeout_minutes: int = 10) -> None:
    """Megatron parallel_state groups for the layout, then the model-parallel RNG seeds.

    `timeout_minutes` (parallel.timeout_minutes) bounds every subgroup's collectives too, so a
    dead peer stops TP/PP/DP collectives as soon as the world group's would."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=layout.tp,
        pipeline_model_parallel_size=layout.pp,
        virtual_pipeline_model_parallel_size=layout.vp,
        distributed_timeout_minutes=timeout_minutes,
    )
    seed_everything(seed)
    model_parallel_cuda_manual_seed(seed)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def destroy() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()

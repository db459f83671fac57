"""Cross-section checks and derived sizes of a run, done before any process group exists.

`resolve_layout(cfg, world_size)` is pure: it needs only the config and the number of
processes, so a bad combination fails on every rank identically and before NCCL/gloo start.
"""

from __future__ import annotations

from dataclasses import dataclass

from megacode.config.flavors import model_shape
from megacode.config.schema import ConfigError, RunConfig


@dataclass(frozen=True)
class Layout:
    world_size: int
    tp: int
    pp: int
    vp: int | None
    dp: int
    num_layers: int
    global_batch_size: int
    """Sequences per optimizer step (global_batch_tokens / seq_length)."""
    micro_batch_size: int
    num_microbatches: int
    """Micro-batches per step per data-parallel rank."""


def resolve_layout(cfg: RunConfig, world_size: int) -> Layout:
    flavor = model_shape(cfg)
    par = cfg.parallel
    tp, pp = par.tp, par.pp
    vp = par.vp if par.vp and par.vp > 1 else None
    num_layers = flavor.num_layers

    if world_size % (tp * pp) != 0:
        raise ConfigError(f"world size {world_size} is not divisible by parallel.tp*parallel.pp = {tp}*{pp}")
    dp = world_size // (tp * pp)
    if flavor.num_attention_heads % tp != 0:
        raise ConfigError(f"model {flavor.name}: {flavor.num_attention_heads} attention heads "
                          f"not divisible by parallel.tp={tp}")
    if flavor.num_query_groups % tp != 0:
        raise ConfigError(f"model {flavor.name}: {flavor.num_query_groups} KV groups not divisible by parallel.tp={tp}")
    stages = pp * (vp or 1)
    if num_layers % stages != 0:
        raise ConfigError(f"model {flavor.name}: {num_layers} layers not divisible by "
                          f"parallel.pp*parallel.vp = {pp}*{vp or 1} = {stages}")
    seq = cfg.data.seq_length
    if par.sequence_parallel and seq % tp != 0:
        raise ConfigError(f"data.seq_length={seq} not divisible by parallel.tp={tp} (sequence parallel)")

    tokens = cfg.train.global_batch_tokens
    if tokens % seq != 0:
        raise ConfigError(f"train.global_batch_tokens={tokens} is not a multiple of data.seq_length={seq}")
    global_batch = tokens // seq
    mbs = cfg.train.micro_batch_size
    if global_batch % (mbs * dp) != 0:
        raise ConfigError(f"global batch of {global_batch} sequences (train.global_batch_tokens={tokens} / "
                          f"data.seq_length={seq}) is not divisible by train.micro_batch_size={mbs} x "
                          f"data-parallel size {dp}")
    num_micro = global_batch // (mbs * dp)
    if vp is not None and num_micro % pp != 0:
        raise ConfigError(f"interleaved pipeline (parallel.vp={vp}) needs micro-batches per step ({num_micro}) "
                          f"divisible by parallel.pp={pp}")
    if pp > 1 and num_micro < pp:
        raise ConfigError(f"{num_micro} micro-batches per step cannot fill a {pp}-stage pipeline; "
                          f"raise train.global_batch_tokens or lower train.micro_batch_size")
    profile = cfg.logging.profile
    if profile.enabled and any(r >= world_size for r in profile.ranks):
        raise ConfigError(f"logging.profile.ranks={profile.ranks} names ranks outside the world of {world_size}")
    return Layout(world_size=world_size, tp=tp, pp=pp, vp=vp, dp=dp, num_layers=num_layers,
                  global_batch_size=global_batch, micro_batch_size=mbs, num_microbatches=num_micro)

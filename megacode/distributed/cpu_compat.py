"""Run Megatron-Core's real code paths on a machine without CUDA (DESIGN.md §4).

megatron-core 0.16.1 assumes CUDA in a handful of places. Mapping those to the CPU lets the
genuine schedules, p2p communication, DDP, distributed optimizer and `dist_checkpointing`
run on gloo ranks, so CI tests the code a cluster runs. The touch points:

- tensor factories given ``device="cuda"`` and ``torch.cuda.current_device()`` (schedules,
  p2p, optimizer buffers, rotary ``inv_freq``): ``current_device()`` returns the CPU device
  and factories map a CUDA device argument to the CPU;
- ``torch.cuda.synchronize/Stream/Event/current_stream/default_stream/stream/nvtx``: no-ops;
- the model-parallel RNG tracker (``tensor_parallel/random.py``) forks the CUDA generator:
  its state functions are pointed at the CPU default generator;
- string checks of ``Tensor.type()`` against ``torch.cuda.FloatTensor`` (distributed
  optimizer, ``clip_grads.py``): the no-argument form reports the CUDA name on CPU tensors;
- ``Tensor.cuda()`` returns the tensor itself;
- without apex/TE (always so on CPU), loading a resharded distributed-optimizer state into
  torch's Adam trips on its per-parameter ``step``: see `patch_torch_adam_reshardable_load`.

Active only when CUDA is absent, and only for the pinned megatron-core version: an upgrade
must be re-validated (tests/test_cpu_compat.py fails loudly when a touch point moves).
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch
import torch.utils._device as torch_device_module

TESTED_MEGATRON_CORE = "0.16.1"

# Factories that take a `device=` keyword and that Megatron-Core calls with a CUDA device.
_FACTORIES = ("zeros", "ones", "empty", "full", "tensor", "arange", "rand", "randn", "randint",
              "zeros_like", "ones_like", "empty_like", "full_like", "as_tensor")

_installed = False


class MegatronVersionError(RuntimeError):
    """The installed megatron-core is not the version this CPU mapping was validated on."""


def _is_cuda_device(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, int) and not isinstance(device, bool)


def _cpu_device_kw(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if "device" in kwargs and _is_cuda_device(kwargs["device"]):
            kwargs["device"] = "cpu"
        return fn(*args, **kwargs)

    return wrapper


class _NoopStream:
    """Stand-in for torch.cuda.Stream/Event: CPU work is already ordered."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, *args):
        pass

    def wait_event(self, *args):
        pass

    def synchronize(self):
        pass

    def record(self, *args):
        pass

    def record_event(self, *args):
        return _NoopStream()

    def query(self):
        return True

    def elapsed_time(self, other):
        return 0.0


def _patch_tensor_methods() -> None:
    original_type = torch.Tensor.type

    def type_reporting_cuda(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None and not kwargs:
            name = original_type(self)
            # 'torch.FloatTensor' -> 'torch.cuda.FloatTensor', what Megatron-Core compares with.
            return name.replace("torch.", "torch.cuda.", 1) if not self.is_cuda else name
        return original_type(self, dtype, non_blocking, **kwargs)

    torch.Tensor.type = type_reporting_cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self

    original_to = torch.Tensor.to

    def to_cpu_instead_of_cuda(self, *args, **kwargs):
        if args and _is_cuda_device(args[0]):
            args = ("cpu",) + args[1:]
        if "device" in kwargs and _is_cuda_device(kwargs["device"]):
            kwargs["device"] = "cpu"
        return original_to(self, *args, **kwargs)

    torch.Tensor.to = to_cpu_instead_of_cuda


def _patch_torch_cuda() -> None:
    cuda = torch.cuda
    cuda.current_device = lambda: torch.device("cpu")
    cuda.synchronize = lambda *args, **kwargs: None
    cuda.Stream = _NoopStream
    cuda.Event = _NoopStream
    cuda.current_stream = lambda *args, **kwargs: _NoopStream()
    cuda.default_stream = lambda *args, **kwargs: _NoopStream()
    cuda.stream = lambda *args, **kwargs: contextlib.nullcontext()
    cuda.empty_cache = lambda: None
    cuda.set_device = lambda *args, **kwargs: None
    cuda.device_count = lambda: 0
    cuda.max_memory_allocated = lambda *args, **kwargs: 0
    cuda.memory_allocated = lambda *args, **kwargs: 0
    cuda.reset_peak_memory_stats = lambda *args, **kwargs: None
    # The RNG tracker keeps per-region CUDA generator states; the CPU generator stands in.
    cuda.get_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    cuda.set_rng_state = lambda state, *args, **kwargs: torch.set_rng_state(state)
    cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(seed)
    cuda.manual_seed_all = lambda seed: None  # torch.manual_seed already seeded the CPU generator
    cuda.random.get_rng_state = cuda.get_rng_state
    cuda.random.set_rng_state = cuda.set_rng_state
    cuda.nvtx.range_push = lambda *args, **kwargs: None
    cuda.nvtx.range_pop = lambda *args, **kwargs: None
    cuda.nvtx.range = lambda *args, **kwargs: contextlib.nullcontext()
    # `with torch.device("meta")` recognises factories by identity, from a cached set: fill the
    # cache with the originals before wrapping them, or meta-device builds would allocate.
    torch_device_module._device_constructors()
    for name in _FACTORIES:
        setattr(torch, name, _cpu_device_kw(getattr(torch, name)))


def _patch_megatron() -> None:
    from megatron.core.tensor_parallel import random as mcore_random

    def get_state(device="cuda", clone=False, graph_safe=False):
        state = torch.get_rng_state()
        return state.clone() if clone else state

    def set_state(new_state, device=-1, graph_safe=False):
        torch.set_rng_state(new_state)

    mcore_random._get_cuda_rng_state = get_state
    mcore_random._set_cuda_rng_state = set_state


def patch_torch_adam_reshardable_load() -> None:
    """Loading a `fully_reshardable` distributed-optimizer state into torch's Adam (the path
    without apex/TE, so always on CPU) copies every per-parameter state key from the file,
    but torch's Adam keeps a `step` tensor that the file stores per param group instead: the
    copy fails with KeyError 'step'. Keep the step that `load_state_dict` already restored, as
    a tensor of each parameter's own: `load_state_dict` hands one shared tensor to all of them,
    and Adam's in-place `step += 1` would then advance it once per parameter."""
    from megatron.core.optimizer import distrib_optimizer

    if distrib_optimizer.HAVE_APEX_OR_TE:
        return
    cls = distrib_optimizer.DistributedOptimizer
    if getattr(cls, "_megacode_step_patch", False):
        return
    original = cls._set_main_param_and_optimizer_states

    def set_states_keeping_step(self, model_param, tensors):
        if "step" not in tensors:
            group_index, group_order = self.model_param_group_index_map[model_param]
            main_param = self.optimizer.param_groups[group_index]["params"][group_order]
            state = self.optimizer.state.get(main_param, {})
            if "step" in state:
                state["step"] = state["step"].detach().clone()
                tensors = {**tensors, "step": state["step"]}
        return original(self, model_param, tensors)

    cls._set_main_param_and_optimizer_states = set_states_keeping_step
    cls._megacode_step_patch = True


def check_megatron_version() -> None:
    import megatron.core

    found = megatron.core.__version__
    if found != TESTED_MEGATRON_CORE and not os.environ.get("MEGACODE_ALLOW_UNTESTED_MCORE"):
        raise MegatronVersionError(
            f"megacode's CPU mapping of Megatron-Core was validated on megatron-core=={TESTED_MEGATRON_CORE}, "
            f"found {found}: run tests/test_cpu_compat.py and the multi-rank tests, update "
            f"megacode/distributed/cpu_compat.py, or set MEGACODE_ALLOW_UNTESTED_MCORE=1 at your own risk")


def install() -> bool:
    """Apply the CPU mapping once, if CUDA is absent. Returns True when it is active."""
    global _installed
    patch_torch_adam_reshardable_load()
    if torch.cuda.is_available():
        return False
    if _installed:
        return True
    check_megatron_version()
    _patch_torch_cuda()
    _patch_tensor_methods()
    _patch_megatron()
    _installed = True
    return True


def is_active() -> bool:
    return _installed

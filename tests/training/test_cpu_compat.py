"""The CPU mapping of Megatron-Core (DESIGN.md §4) is pinned to the version it was validated on.

If megatron-core is upgraded, these fail loudly: the version check, the patched functions'
existence and signatures, and the behaviour the mapping promises. The multi-rank tests in this
directory then exercise the real schedules, optimizer and checkpointing through it.
"""

import inspect
import subprocess
import sys

import pytest

from megacode.distributed import cpu_compat
from tests.training.launch import REPO


def test_pinned_megatron_core_version():
    import megatron.core

    assert megatron.core.__version__ == cpu_compat.TESTED_MEGATRON_CORE, (
        f"megatron-core {megatron.core.__version__} is installed but the CPU mapping was validated on "
        f"{cpu_compat.TESTED_MEGATRON_CORE}: re-validate megacode/distributed/cpu_compat.py")


def test_version_mismatch_is_refused(monkeypatch):
    import megatron.core

    monkeypatch.setattr(megatron.core, "__version__", "0.99.0")
    monkeypatch.delenv("MEGACODE_ALLOW_UNTESTED_MCORE", raising=False)
    with pytest.raises(cpu_compat.MegatronVersionError, match="validated on megatron-core==0.16.1, found 0.99.0"):
        cpu_compat.check_megatron_version()


def test_patched_touch_points_still_exist():
    from megatron.core.optimizer import distrib_optimizer
    from megatron.core.tensor_parallel import random as mcore_random

    assert list(inspect.signature(mcore_random._get_cuda_rng_state).parameters) == ["device", "clone", "graph_safe"]
    assert list(inspect.signature(mcore_random._set_cuda_rng_state).parameters) == ["new_state", "device", "graph_safe"]
    setter = distrib_optimizer.DistributedOptimizer._set_main_param_and_optimizer_states
    assert list(inspect.signature(setter).parameters) == ["self", "model_param", "tensors"]
    assert hasattr(distrib_optimizer, "HAVE_APEX_OR_TE")
    # The string checks the mapping answers for (distributed optimizer, grad clipping).
    assert "torch.cuda.FloatTensor" in inspect.getsource(distrib_optimizer)


BEHAVIOUR = r"""
import torch
from megacode.distributed import cpu_compat
assert cpu_compat.install() is True
assert torch.zeros(2, device="cuda").device.type == "cpu"
assert torch.empty(2, device=torch.cuda.current_device()).device.type == "cpu"
assert torch.ones(2).cuda().device.type == "cpu"
assert torch.ones(2).type() == "torch.cuda.FloatTensor"
assert torch.ones(2).type(torch.float64).dtype == torch.float64
with torch.device("meta"):
    assert torch.empty(3).device.type == "meta"  # meta builds must not allocate
torch.cuda.synchronize(); torch.cuda.current_stream().wait_stream(torch.cuda.Stream())
from megatron.core.tensor_parallel import random as r
tracker = r.get_cuda_rng_tracker()
tracker.add("model-parallel-rng", 1234)
before = torch.get_rng_state()
with tracker.fork():
    inside = torch.rand(3)
assert torch.equal(torch.get_rng_state(), before)  # fork restores the default generator
with tracker.fork():
    again = torch.rand(3)
assert not torch.equal(inside, again)  # the tracked generator advanced
print("ok")
"""


def test_mapping_behaviour_in_a_fresh_process():
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", BEHAVIOUR], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]

"""Count device-to-host synchronizations: every point where the host waits for a tensor's value.

What counts (on the thread that entered the counter; loader threads are not the step's path):
- a scalar read, `aten::_local_scalar_dense`, seen through a TorchDispatchMode: `.item()`,
  `float(t)`, `int(t)`, `bool(t)` (an `if t > 0:`), `t.__index__`, formatting a 0-d tensor, and
  the same reads made from C++ inside other ops;
- `Tensor.tolist()`, `Tensor.numpy()`, `Tensor.cpu()` and `torch.tensor([...tensors...])` (these
  copy without going through the dispatcher, so they are patched at the Python level);
- `torch.cuda.synchronize()` and `Stream/Event.synchronize()` (no-ops on CPU: still counted).
Not counted: host-to-device copies of pageable memory (`torch.tensor(x, device=cuda)`, a blocking
`.to(cuda)`), which PyTorch also follows with a stream synchronization: on CPU they cannot be told
from host copies (the step path avoids them: megacode.training.step_stats fills scalars instead).
On CPU none of these waits for anything; each would on a GPU, so the count is what a GPU run pays,
except reads of tensors that are host tensors on a GPU too (`HOST_TENSOR_READS`: torch's Adam
step counters, the CPU RNG state): those are recorded with the reason and not counted as syncs.
Each event records the nearest megacode and Megatron-Core frames, so a test names the culprit.
"""

from __future__ import annotations

import contextlib
import threading
import traceback
from typing import Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_SCALAR_READ = torch.ops.aten._local_scalar_dense.default


# Reads of tensors that live on the host on every machine, GPU runs included: no device sync.
# (path fragment of a frame on the stack, why)
HOST_TENSOR_READS = (
    ("/torch/optim/", "torch.optim's per-parameter step counters (host tensors unless capturable/fused)"),
    ("megatron/core/tensor_parallel/random.py", "the RNG tracker's check of the CPU generator state"),
)


def _where(stack) -> str:
    """'megatron/core/y.py:34 fn <- megacode/x.py:12 fn' for the innermost frames of each."""
    found = {}
    for frame in reversed(stack):
        path = frame.filename.replace("\\", "/")
        for root in ("megacode/", "megatron/core/"):
            if root in path and root not in found and "tests/" not in path:
                found[root] = f"{root}{path.split(root, 1)[1]}:{frame.lineno} {frame.name}"
    return " <- ".join(found[r] for r in ("megatron/core/", "megacode/") if r in found) or "?"


def _host_reason(stack) -> str:
    for frame in reversed(stack):
        path = frame.filename.replace("\\", "/")
        for fragment, why in HOST_TENSOR_READS:
            if fragment in path:
                return why
        if "megacode/" in path and "tests/" not in path:
            return ""  # megacode's own code reached first: not one of the known host reads
    return ""


class _ScalarReads(TorchDispatchMode):
    def __init__(self, counter: "HostSyncCounter"):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is _SCALAR_READ:
            self.counter.record("scalar read")
        return func(*args, **(kwargs or {}))


class HostSyncCounter:
    """`with HostSyncCounter() as counter: ...`; `counter.events` lists (kind, where, host reason:
    empty for a device sync); `mark()` starts a new segment (one per training step), `segments`
    holds them; `paused()` stops counting for a while (checks a test makes)."""

    def __init__(self):
        self.thread = threading.get_ident()
        self.events: list[tuple[str, str, str]] = []
        self.segments: dict = {}
        self._current: Optional[object] = None
        self._restore: list = []
        self._mode = _ScalarReads(self)
        self._busy = False

    def record(self, kind: str) -> None:
        if threading.get_ident() != self.thread or self._busy:
            return
        self._busy = True  # the stack walk itself must not count
        try:
            stack = [f for f in traceback.extract_stack() if not f.filename.endswith("host_syncs.py")]
            event = (kind, _where(stack), _host_reason(stack))
            self.events.append(event)
            if self._current is not None:
                self.segments.setdefault(self._current, []).append(event)
        finally:
            self._busy = False

    @contextlib.contextmanager
    def paused(self):
        busy, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = busy

    def mark(self, key) -> None:
        self._current = key
        self.segments.setdefault(key, [])

    def _patch(self, owner, name: str, kind: str) -> None:
        original = getattr(owner, name)
        counter = self

        def counted(*args, **kwargs):
            counter.record(kind)
            return original(*args, **kwargs)

        setattr(owner, name, counted)
        self._restore.append((owner, name, original))

    def _patch_tensor_factory(self) -> None:
        original = torch.tensor
        counter = self

        def holds_tensor(data) -> bool:
            return isinstance(data, torch.Tensor) or (isinstance(data, (list, tuple)) and any(map(holds_tensor, data)))

        def tensor(data, *args, **kwargs):
            if isinstance(data, (list, tuple)) and holds_tensor(data):
                counter.record("torch.tensor(list of tensors)")
            return original(data, *args, **kwargs)

        torch.tensor = tensor
        self._restore.append((torch, "tensor", original))

    def __enter__(self) -> "HostSyncCounter":
        for name in ("tolist", "numpy", "cpu"):
            self._patch(torch.Tensor, name, f"Tensor.{name}")
        self._patch(torch.cuda, "synchronize", "torch.cuda.synchronize")
        owners = {id(o): o for o in (torch.cuda.Stream, torch.cuda.Event) if hasattr(o, "synchronize")}
        for owner in owners.values():  # on CPU both are the same stand-in class (cpu_compat)
            self._patch(owner, "synchronize", f"{owner.__name__}.synchronize")
        self._patch_tensor_factory()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)
        self._restore.clear()

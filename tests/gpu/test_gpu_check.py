"""The GPU check script: skips cleanly without CUDA, picks its rows from what the machine has,
runs them with it."""

import subprocess
import sys

import pytest
import torch

from tests.training.launch import REPO

sys.path.insert(0, str(REPO / "tools"))
import gpu_check  # noqa: E402


def test_gpu_check_skips_cleanly_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: covered by test_gpu_check_runs")
    proc = subprocess.run([sys.executable, "tools/gpu_check.py"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("SKIP: no CUDA device")


@pytest.mark.parametrize("te, fp8, backend, expected", [
    # Hopper with TE and a megacode that has model.attention_backend: all three rows.
    (True, True, True, {"bf16 te": "", "bf16 sdpa": "", "fp8 te": ""}),
    # Ampere: no FP8.
    (True, False, True, {"bf16 te": "", "bf16 sdpa": "", "fp8 te": "capability 8.9"}),
    # No TE: the local spec only.
    (False, True, True, {"bf16 te": "Transformer Engine", "bf16 sdpa": "", "fp8 te": "Transformer Engine"}),
    # No attention_backend key: without TE, auto is the local spec (unfused attention) ...
    (False, True, False, {"bf16 te": "Transformer Engine", "bf16 local": "", "fp8 te": "Transformer Engine"}),
    # ... with TE, nothing forces the local spec.
    (True, True, False, {"bf16 te": "", "bf16 sdpa": "no model.attention_backend", "fp8 te": ""}),
])
def test_rows_follow_what_the_machine_has(te, fp8, backend, expected):
    fields = {"fp8", "num_layers"} | ({"attention_backend"} if backend else set())
    plan = gpu_check.rows(te, fp8, fields)
    assert [name for name, _, _ in plan] == list(expected)
    for name, overrides, why in plan:
        assert (expected[name] in why) if expected[name] else why == "", (name, why)
        if name == "bf16 sdpa" and not why:
            assert "model.attention_backend=sdpa" in overrides
        if name.startswith("fp8"):
            assert "model.fp8=true" in overrides
        if backend and name.endswith(" te"):
            assert "model.attention_backend=auto" in overrides


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_check_runs():
    proc = subprocess.run([sys.executable, "tools/gpu_check.py", "--iters", "6"], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bf16" in proc.stdout and "tokens/s/GPU" in proc.stdout and "megacode/bare" in proc.stdout

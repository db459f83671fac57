"""The GPU check script: skips cleanly without CUDA, runs BF16/FP8 steps with it."""

import subprocess
import sys

import pytest
import torch

from tests.training.launch import REPO


def test_gpu_check_skips_cleanly_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: covered by test_gpu_check_runs")
    proc = subprocess.run([sys.executable, "tools/gpu_check.py"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("SKIP: no CUDA device")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_check_runs():
    proc = subprocess.run([sys.executable, "tools/gpu_check.py", "--iters", "6"], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bf16" in proc.stdout and "tokens/s/GPU" in proc.stdout

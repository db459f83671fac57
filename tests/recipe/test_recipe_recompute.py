"""`parallel.recompute=full` (the 70B long-context layout needs it) really recomputes: Megatron-Core
checkpoints every layer, and loss and gradients equal those without recompute bit for bit."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from megacode.config import ConfigError, load_config

HERE = Path(__file__).resolve().parent


def test_full_recompute_checkpoints_each_layer_with_identical_gradients():
    proc = subprocess.run([sys.executable, str(HERE / "recompute_worker.py")], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["checkpoints_none"] == 0 and result["checkpoints_full"] == 4  # the tiny flavor's 4 layers
    assert result["loss_full"] == result["loss_none"] and result["grads_equal"], result


def test_recompute_mode_is_validated():
    with pytest.raises(ConfigError, match="parallel.recompute must be none, selective or full, got 'some'"):
        load_config(HERE.parents[1] / "configs" / "tiny" / "pretrain.yaml", ["parallel.recompute=some"])

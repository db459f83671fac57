"""Vocabulary padding (rows added so TP divides the table) must not change the model: padded
logits are -inf, so the loss equals cross entropy over the true vocabulary — what the exported
Hugging Face model (which has no padding) computes."""

import subprocess
import sys

from tests.training.launch import REPO


def test_padded_logits_take_no_probability():
    proc = subprocess.run([sys.executable, "-W", "ignore", "tests/training/scripts/vocab_padding_check.py"],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]

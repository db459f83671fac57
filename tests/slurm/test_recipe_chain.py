"""The whole tiny recipe through launch/slurm/submit_recipe.sh with real sbatch and afterok chains:
import, stages 1-4 (both stage 3s), three exports, every job COMPLETED, each stage loaded from its
parent, the exports load in transformers; a stage failing on a planted bad override leaves its
dependents cancelled and the driver says which."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.slurm.conftest import REPO

RECIPE_ENV = {"GPUS_PER_NODE": "0", "NPROC_PER_NODE": "4", "CPUS_PER_TASK": "4", "PYTHON": sys.executable,
              "WAIT_POLL_S": "2"}
OVERRIDES = ["train.iters=3", "schedule.warmup_iters=1", "train.eval_interval=0", "logging.interval=1"]
PARENT = {"stage1_code": "llama2", "stage2_python": "stage1_code", "stage3_long_context": "stage1_code",
          "stage4_instruct": "stage3_long_context", "stage3_long_context_python": "stage2_python"}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A checkout stand-in (configs, launch, tools linked) whose runs/tiny holds the quickstart's
    inputs: corpus datasets, tokenizer, a random HF "Llama 2"."""
    root = tmp_path_factory.mktemp("recipe-root")
    for name in ("configs", "launch", "tools"):
        (root / name).symlink_to(REPO / name)
    proc = subprocess.run(["bash", "launch/quickstart.sh"], cwd=root, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "ASSETS_ONLY": "1", "CORPUS_FILES": "120", "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root


def submit_recipe(cluster, root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["launch/slurm/submit_recipe.sh", "tiny", *args, "--wait", "--", *OVERRIDES],
                          cwd=root, capture_output=True, text=True, timeout=900,
                          env={**cluster.env, **RECIPE_ENV, **(env or {})})


def summary(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+): job \d+ (\w+) exit", stdout, flags=re.M))


def test_the_whole_tiny_recipe_completes_through_afterok_chains(cluster, root):
    proc = submit_recipe(cluster, root, "--llama2-hf", "runs/tiny/hf/llama2-tiny", env={"RUNS": "runs"})
    states = summary(proc.stdout)
    assert proc.returncode == 0 and len(states) == 9 and set(states.values()) == {"COMPLETED"}, \
        proc.stdout + proc.stderr
    for stage, parent in PARENT.items():
        log = next((root / "logs").glob(f"tiny-{stage}-*.out")).read_text()
        assert f"loaded runs/tiny/{parent}/checkpoints/iter_" in log, (stage, log[-2000:])
    from transformers import AutoModelForCausalLM

    for name in ("tiny", "tiny-instruct", "tiny-python"):
        model = AutoModelForCausalLM.from_pretrained(root / "runs" / "tiny" / "hf" / name)
        assert model.config.vocab_size == 512


def test_a_failing_stage_cancels_its_dependents_only(cluster, root):
    runs = root / "runs-failing" / "tiny"
    runs.mkdir(parents=True)
    (runs / "llama2").symlink_to(root / "runs" / "tiny" / "llama2")  # the import made above
    proc = submit_recipe(cluster, root, env={"RUNS": "runs-failing",
                                             "OVERRIDES_stage3_long_context": "optim.lr=-1"})
    states = summary(proc.stdout)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert states == {"stage1_code": "COMPLETED", "stage3_long_context": "FAILED", "stage4_instruct": "CANCELLED",
                      "export_base": "CANCELLED", "export_instruct": "CANCELLED", "stage2_python": "COMPLETED",
                      "stage3_long_context_python": "COMPLETED", "export_python": "COMPLETED"}, proc.stdout
    assert re.search(r"^stage4_instruct: job \d+ CANCELLED exit \S+ DependencyNeverSatisfied$", proc.stdout, re.M)

"""Launch scripts of the recipe: syntax, the exact commands their dry runs print, resumption of a
restarted stage, and the SLURM chain's afterok dependencies (dry run; tests/slurm runs the chain on
a real SLURM cluster)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.recipe.conftest import REPO

STAGES = ["stage1_code", "stage2_python", "stage3_long_context", "stage4_instruct"]
FROM = {"stage1_code": "llama2", "stage2_python": "stage1_code", "stage3_long_context": "stage1_code",
        "stage4_instruct": "stage3_long_context"}
SCRIPTS = sorted([*REPO.glob("launch/stage*.sh"), *REPO.glob("launch/slurm/stage*.sbatch"),
                  REPO / "launch/slurm/submit_recipe.sh"])


def run(args, env=None, check=True):
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # as outside any allocation
    full.update({"PYTHON": "python", **(env or {})})
    proc = subprocess.run(args, cwd=REPO, env=full, capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def recipe_nodes(flavor, stage) -> int:
    return int(run(["bash", "-c", f"source launch/stage_lib.sh; recipe_nodes {flavor} {stage}"]).stdout)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script):
    assert run(["bash", "-n", str(script)]).returncode == 0


@pytest.mark.parametrize("stage", STAGES)
def test_slurm_stage_dry_run_prints_the_srun_torchrun_command(stage):
    nodes = recipe_nodes("7b", stage)
    out = run(["bash", f"launch/slurm/{stage}.sbatch", "7b", "train.eval_iters=2"],
              env={"DRY_RUN": "1", "SLURM_NNODES": str(nodes)}).stdout.strip()
    expected = (f"srun --kill-on-bad-exit=1 --ntasks-per-node=1 --nodes={nodes} python -m torch.distributed.run "
                f"--nnodes={nodes} --nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=127.0.0.1:29500 "
                f"--rdzv-id=local --signals-to-handle=SIGTERM\\,SIGINT\\,SIGHUP\\,SIGQUIT\\,SIGUSR1 "  # printf %q escapes commas
                f"-m megacode.train --config configs/codellama-7b/{stage}.yaml fault.exit_status_file=logs/exit_status-local.txt "
                f"checkpoint.dir=runs/codellama-7b/{stage}/checkpoints "
                f"logging.dir=runs/codellama-7b/{stage}/tensorboard "
                f"checkpoint.load=runs/codellama-7b/{FROM[stage]}/checkpoints checkpoint.finetune=true "
                f"train.eval_iters=2")
    assert out == expected
    header = (REPO / "launch/slurm" / f"{stage}.sbatch").read_text()
    for directive in ("--requeue", "--signal=B:USR1@120", "--gpus-per-node=8", "--time="):
        assert f"#SBATCH {directive}" in header


def test_stage_resumes_its_own_checkpoint_after_a_restart(tmp_path):
    env = {"DRY_RUN": "1", "SLURM_NNODES": "8", "RUNS": str(tmp_path)}
    fresh = run(["bash", "launch/slurm/stage3_long_context.sbatch", "7b"], env=env).stdout
    assert f"checkpoint.load={tmp_path}/codellama-7b/stage1_code/checkpoints checkpoint.finetune=true" in fresh
    ckpt = tmp_path / "codellama-7b" / "stage3_long_context" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "latest_checkpointed_iteration.txt").write_text("500\n")
    again = run(["bash", "launch/slurm/stage3_long_context.sbatch", "7b"], env=env)
    assert f"checkpoint.dir={ckpt} " in again.stdout
    assert "checkpoint.load=null checkpoint.finetune=false" in again.stdout
    odd = run(["bash", "launch/slurm/stage3_long_context.sbatch", "7b"], env={**env, "SLURM_NNODES": "2"})
    assert "planned for 8" in odd.stderr  # a node count off the plan is said


def test_torchrun_stage_scripts_and_bad_flavor(tmp_path):
    runs = tmp_path / "runs"
    for stage in STAGES:
        out = run([f"launch/{stage}.sh", "tiny", "train.iters=3"], env={"DRY_RUN": "1", "RUNS": str(runs)}).stdout
        assert out.strip() == (f"launch/torchrun.sh configs/tiny/{stage}.yaml "
                               f"checkpoint.dir={runs}/tiny/{stage}/checkpoints "
                               f"logging.dir={runs}/tiny/{stage}/tensorboard "
                               f"checkpoint.load={runs}/tiny/{FROM[stage]}/checkpoints checkpoint.finetune=true "
                               f"train.iters=3")
    bad = run(["launch/stage1_code.sh", "9b"], env={"DRY_RUN": "1"}, check=False)
    assert bad.returncode != 0 and "unknown flavor '9b'" in bad.stderr


def test_export_and_import_jobs_print_the_conversion_commands():
    out = run(["bash", "launch/slurm/stage_export.sbatch", "7b", "stage4_instruct", "codellama-7b-instruct"],
              env={"DRY_RUN": "1", "PYTHON": "python"}).stdout.strip()
    assert out == ("python tools/convert_checkpoint.py megacode-to-hf "
                   "--input runs/codellama-7b/stage4_instruct/checkpoints "
                   "--output runs/codellama-7b/hf/codellama-7b-instruct --dtype bf16 "
                   "--tokenizer-model REPLACE/tokenizers/codellama/tokenizer.model")
    out = run(["bash", "launch/slurm/stage_export.sbatch", "34b", "stage3_long_context_python", "x"],
              env={"DRY_RUN": "1"}).stdout
    assert "REPLACE/tokenizers/llama2/tokenizer.model" in out  # 34B exports its 32,000-piece tokenizer
    out = run(["bash", "launch/slurm/stage_import.sbatch", "70b", "/m/Llama-2-70b-hf"], env={"DRY_RUN": "1"}).stdout
    assert out.split() == ["python", "tools/convert_checkpoint.py", "hf-to-megacode", "--input", "/m/Llama-2-70b-hf",
                           "--output", "runs/codellama-70b/llama2/checkpoints", "--flavor", "codellama-70b",
                           "--dtype", "bf16"]


def parse_chain(stdout: str) -> dict:
    """{label: (job id, sbatch argv)} from submit_recipe.sh's dry-run output."""
    jobs, lines = {}, stdout.strip().splitlines()
    for command, result in zip(lines[::2], lines[1::2]):
        label, job = re.fullmatch(r"(\S+): job (\S+)", result).groups()
        jobs[label] = (job, shlex.split(command))
    return jobs


def dependency(argv) -> str | None:
    deps = [a.split(":", 1)[1] for a in argv if a.startswith("--dependency=afterok:")]
    return deps[0] if deps else None


def test_submit_recipe_dry_run_chains_every_stage():
    jobs = parse_chain(run(["launch/slurm/submit_recipe.sh", "7b", "--dry-run", "--llama2-hf", "/m/llama2",
                            "--", "train.eval_iters=2"]).stdout)
    expect = {"import": None, "stage1_code": "import", "stage3_long_context": "stage1_code",
              "stage4_instruct": "stage3_long_context", "export_base": "stage3_long_context",
              "export_instruct": "stage4_instruct", "stage2_python": "stage1_code",
              "stage3_long_context_python": "stage2_python", "export_python": "stage3_long_context_python"}
    assert set(jobs) == set(expect)
    for label, parent in expect.items():
        job, argv = jobs[label]
        assert argv[:2] == ["sbatch", "--parsable"]
        assert dependency(argv) == (jobs[parent][0] if parent else None), label
    for label in ("stage1_code", "stage2_python", "stage3_long_context", "stage4_instruct"):
        argv = jobs[label][1]
        assert f"--nodes={recipe_nodes('7b', label)}" in argv and f"launch/slurm/{label}.sbatch" in argv
        assert argv[-2:] == ["7b", "train.eval_iters=2"]
    python_lcft = jobs["stage3_long_context_python"][1]
    assert "--export=ALL,RUNS=runs,NAME=stage3_long_context_python,FROM=stage2_python" in python_lcft
    assert jobs["export_python"][1][-3:] == ["7b", "stage3_long_context_python", "codellama-7b-python"]

    short = parse_chain(run(["launch/slurm/submit_recipe.sh", "34b", "--skip-python", "--dry-run"]).stdout)
    assert list(short) == ["stage1_code", "stage3_long_context", "stage4_instruct", "export_base", "export_instruct"]
    assert dependency(short["stage1_code"][1]) is None
    assert "--nodes=64" in short["stage1_code"][1]

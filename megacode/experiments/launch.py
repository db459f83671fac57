"""One training run of an experiment, as a user runs one: a run config file, `torchrun -m
megacode.train`, then the checkpoint exported to Hugging Face format with megacode's converter.

    model = train_and_export("fim", tree, out_dir, nproc=2, threads=1, log=print)

OUT/runs/NAME/ holds run.yaml (the full run config), train.log (everything the ranks printed),
history.json (rank 0's step losses), checkpoints/ and hf/. While the ranks train, their step
lines are turned into progress lines with the step rate and an ETA.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import yaml

from megacode.config import RunConfig
from megacode.config.loader import build_dataclass
from megacode.distributed.local_launch import free_port, killed_after

STEP_LINE = re.compile(r"train step (\d+) \| loss ([0-9.eE+-]+|nan|inf)")
REPORT_EVERY_S = 20.0


@dataclass
class TrainedModel:
    name: str
    run_dir: Path
    checkpoint: Path
    hf_dir: Path
    seconds: float
    """Wall time of the torchrun command."""
    tokens: int
    """Tokens trained on (steps x global batch tokens)."""
    final_loss: Optional[float]
    command: str
    """The shell command that trained it."""
    reused: bool = False
    """Taken from an earlier run (--reuse); `seconds` is that run's."""


def format_duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


class StepProgress:
    """Progress lines from the trainer's step lines: step, loss, seconds per step, ETA."""

    def __init__(self, name: str, iters: int, log: Callable[[str], None]) -> None:
        self.name, self.iters, self.log = name, iters, log
        self.times: deque = deque(maxlen=20)  # (monotonic time, step) of recent steps
        self.last_report = 0.0
        self.loss: Optional[float] = None

    def line(self, text: str) -> None:
        match = STEP_LINE.search(text)
        if not match:
            return
        step, self.loss = int(match.group(1)), float(match.group(2))
        now = time.monotonic()
        self.times.append((now, step))
        if now - self.last_report < REPORT_EVERY_S and step < self.iters:
            return
        self.last_report = now
        (t0, s0), (t1, s1) = self.times[0], self.times[-1]
        rate = (t1 - t0) / (s1 - s0) if s1 > s0 else None
        eta = f"ETA {format_duration(rate * (self.iters - step))}" if rate else "ETA ..."
        pace = f"{rate:.2f} s/step" if rate else "-- s/step"
        self.log(f"{self.name}: step {step}/{self.iters} ({100 * step / self.iters:.0f}%) loss {self.loss:.3f} | "
                 f"{pace} | {eta}")


def write_run_config(tree: dict, path: Path) -> RunConfig:
    """Validate `tree` with megacode's loader and write it as the run's YAML file."""
    cfg = build_dataclass(RunConfig, tree, "run")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return cfg


def run_torchrun(command: List[str], env: dict, log_path: Path, progress: StepProgress) -> int:
    """Run `command` in its own process group, its output to `log_path` and `progress`; afterwards
    the group is killed whole (a writer process of dist_checkpointing can outlive the ranks)."""
    with open(log_path, "w", buffering=1) as log_file:  # line-buffered: `tail -f` works
        with killed_after(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True, start_new_session=True, bufsize=1)) as proc:
            for line in proc.stdout:
                log_file.write(line)
                progress.line(line)
            return proc.wait()


def train_and_export(name: str, tree: dict, out_dir: Path, nproc: int, threads: int, tokenizer_model: str,
                     log: Callable[[str], None], reuse: bool = False) -> TrainedModel:
    """Train run `name` from the run-config `tree` under OUT/runs/NAME and export it to NAME/hf.
    With `reuse`, a run whose run.yaml is unchanged and whose export exists is not trained again."""
    from megacode.convert.hf_export import ExportOptions, export_hf

    run_dir = out_dir / "runs" / name
    config_path, done_path = run_dir / "run.yaml", run_dir / "trained.json"
    tree = dict(tree, checkpoint=dict(tree.get("checkpoint", {}), dir=str(run_dir / "checkpoints")))
    text = yaml.safe_dump(tree, sort_keys=False)
    if reuse and done_path.is_file() and config_path.is_file() and config_path.read_text() == text:
        done = json.loads(done_path.read_text())
        log(f"{name}: reusing {run_dir} (same run.yaml, trained in {format_duration(done['seconds'])})")
        return TrainedModel(name, run_dir, Path(done["checkpoint"]), Path(done["hf_dir"]), done["seconds"],
                            done["tokens"], done["final_loss"], done["command"], reused=True)
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    cfg = write_run_config(tree, config_path)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               "-m", "megacode.train", "--config", str(config_path), "--history-json", str(run_dir / "history.json")]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    shown = f"OMP_NUM_THREADS={threads} torchrun --nproc-per-node {nproc} -m megacode.train --config {config_path}"
    log(f"{name}: training {cfg.train.iters} steps of {cfg.train.global_batch_tokens} tokens at sequence length "
        f"{cfg.data.seq_length} ({nproc} gloo ranks): {shown}")
    progress = StepProgress(name, cfg.train.iters, log)
    start = time.monotonic()
    code = run_torchrun(command, env, run_dir / "train.log", progress)
    seconds = time.monotonic() - start
    if code != 0:
        tail = "".join((run_dir / "train.log").read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{name}: training failed with exit code {code} after {format_duration(seconds)}; "
                           f"last lines of {run_dir / 'train.log'}:\n{tail}")
    history = json.loads((run_dir / "history.json").read_text())
    final_loss = next((step["loss"] for step in reversed(history) if step.get("loss") is not None), None)
    log(f"{name}: trained in {format_duration(seconds)}, final training loss {final_loss}")
    hf_dir = run_dir / "hf"
    export_hf(ExportOptions(input=run_dir / "checkpoints", output=hf_dir, tokenizer_model=Path(tokenizer_model),
                            progress=False))
    model = TrainedModel(name, run_dir, run_dir / "checkpoints", hf_dir, seconds,
                         cfg.train.iters * cfg.train.global_batch_tokens, final_loss, shown)
    done_path.write_text(json.dumps({"checkpoint": str(model.checkpoint), "hf_dir": str(hf_dir), "seconds": seconds,
                                     "tokens": model.tokens, "final_loss": model.final_loss, "command": shown}) + "\n")
    return model


def data_section(dataset_prefix: str, tokenizer_model: str, seq_length: int) -> dict:
    """The run config's data keys for training on all of one indexed dataset."""
    return {"seq_length": int(seq_length), "paths": [{"path": dataset_prefix, "weight": 1.0}], "split": "100,0",
            "tokenizer_model": tokenizer_model}


def load_model(hf_dir: Path, threads: int):
    """The export as a greedy generator (megacode.eval.infilling.InfillGenerator, fp32 on CPU);
    its `.model` is the transformers LlamaForCausalLM, its `.tok` megacode's tokenizer."""
    import torch
    import transformers

    from megacode.eval.generate import GenerationSettings
    from megacode.eval.infilling import InfillGenerator

    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()  # generation past max_position_embeddings is intended here
    return InfillGenerator(hf_dir, GenerationSettings(dtype="float32", device="cpu"))

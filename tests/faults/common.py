"""Shared pieces of the fault scenarios: the run shape, layouts, reference runs, test-only hooks.

Every scenario trains the tiny model on CPU with `schedule.decay_iters` fixed, so the learning
rate of step s does not depend on `train.iters`: a reference run of N steps is the uninterrupted
twin of any interrupted run of the same layout, step for step, bit for bit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from tests.faults.forklaunch import REPO

TINY_CONFIG = REPO / "configs" / "tiny" / "pretrain.yaml"
SHAPE = ["data.seq_length=32", "train.global_batch_tokens=512", "train.micro_batch_size=2",
         "schedule.warmup_iters=2", "schedule.decay_iters=1000", "train.eval_interval=0", "logging.interval=1",
         "logging.dir=null", "data.num_workers=0"]
LAYOUTS = {
    "pp2": (2, ["parallel.tp=1", "parallel.pp=2"]),
    "dp2": (2, ["parallel.tp=1", "parallel.pp=1"]),
    "tp2": (2, ["parallel.tp=2", "parallel.pp=1"]),
    "tp2pp2": (4, ["parallel.tp=2", "parallel.pp=2"]),
}
# Fast watchdog for tests: a dead rank is named within ~3 s.
WATCHDOG = ["fault.heartbeat_interval_s=0.2", "fault.heartbeat_timeout_s=3", "fault.stall_timeout_s=60"]
GLOBAL_BATCH = 16  # 512 tokens / 32 per sample
SIGNAL_LINE = re.compile(r"\[rank(\d+)\] megacode: (SIG\w+)( again)? at step (\d+) \(([^)]+)\)")


def _loader_overrides() -> list[str]:
    """The plain Python collate path where the config has a choice (faster start-up and exit)."""
    from megacode.config.schema import DataConfig

    return ["data.loader=python"] if "loader" in DataConfig.__dataclass_fields__ else []


def argv(layout: str, history: Optional[Path], *overrides: str) -> list[str]:
    args = ["--config", str(TINY_CONFIG)]
    if history is not None:
        args += ["--history-json", str(history)]
    return args + SHAPE + _loader_overrides() + LAYOUTS[layout][1] + WATCHDOG + list(overrides)


def read_history(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def tracker_step(ckpt: Path) -> Optional[int]:
    path = ckpt / "latest_checkpointed_iteration.txt"
    return int(path.read_text()) if path.exists() else None


def signal_receipts(text: str) -> list[dict]:
    return [{"rank": int(m[1]), "signal": m[2], "again": bool(m[3]), "step": int(m[4]), "phase": m[5]}
            for m in SIGNAL_LINE.finditer(text)]


class References:
    """Uninterrupted runs per layout (steps 1..n), computed once and extended when a longer one is asked."""

    def __init__(self, launcher, workdir: Path):
        self.launcher, self.workdir = launcher, workdir
        self.cache: dict[str, list[dict]] = {}

    def get(self, layout: str, steps: int, *overrides: str, key: Optional[str] = None, target=None) -> list[dict]:
        key = key or layout
        if len(self.cache.get(key, [])) < steps:
            history = self.workdir / f"reference_{key}_{steps}.json"
            attempt = self.launcher.start(argv(layout, history, "checkpoint.dir=null", f"train.iters={steps}",
                                               *overrides), nproc=LAYOUTS[layout][0], target=target,
                                          name=f"_ref_{key}")
            codes = attempt.wait(300)
            if set(codes.values()) != {0}:
                raise RuntimeError(f"reference {key} failed: {codes}\n{attempt.log(0)[-3000:]}")
            self.cache[key] = read_history(history)
        return self.cache[key][:steps]


# ---- test-only hooks run inside forked ranks ---------------------------------------------------

class DropRange:
    """The data stream with global batches removed: `ranges` = [(start sample, count), ...]."""

    def __init__(self, dataset, ranges: list[tuple[int, int]]):
        self.dataset, self.ranges = dataset, sorted(ranges)

    def __len__(self) -> int:
        return len(self.dataset) - sum(n for _, n in self.ranges)

    def __getitem__(self, i: int):
        for start, count in self.ranges:
            if i >= start:
                i += count
        return self.dataset[i]


def with_build_hook(hook):
    """A fork target: megacode.train.main with `hook(run)` applied right after build_run."""
    def target(args):
        from megacode import train
        from megacode.training import trainer

        original = trainer.build_run

        def build_run(cfg, layout, *args):
            run = original(cfg, layout, *args)
            hook(run)
            return run

        trainer.build_run = build_run
        return train.main(args)

    return target


def drop_batches(steps: list[int]):
    """Fork target: train on the stream without the global batches of `steps` (1-based)."""
    ranges = [((s - 1) * GLOBAL_BATCH, GLOBAL_BATCH) for s in steps]

    def hook(run):
        if hasattr(run.train_data, "dataset") and hasattr(run.train_data, "get"):  # a StepLoader
            run.train_data.dataset = DropRange(run.train_data.dataset, ranges)
        else:
            run.train_data = DropRange(run.train_data, ranges)

    return with_build_hook(hook)


def snapshot(run) -> dict:
    """Every weight, optimizer state tensor and the schedule position, copied."""
    import torch

    tensors = {}
    for c, chunk in enumerate(run.model):
        for name, param in chunk.named_parameters():
            tensors[f"model{c}.{name}"] = param.detach().clone()
    for o, inner in enumerate(getattr(run.optimizer, "chained_optimizers", [run.optimizer])):
        for g, group in enumerate(inner.optimizer.param_groups):
            for p, param in enumerate(group["params"]):
                tensors[f"opt{o}.group{g}.param{p}"] = param.detach().clone()
                for key, value in inner.optimizer.state.get(param, {}).items():
                    if torch.is_tensor(value):
                        tensors[f"opt{o}.group{g}.param{p}.{key}"] = value.detach().clone()
    return {"tensors": tensors, "scheduler_steps": run.scheduler.num_steps,
            "consumed": run.state.consumed_train_samples, "step": run.state.step}


def watch_step(step: int, out: Path):
    """Fork target: record whether step `step` changed any weight or optimizer state (JSON per rank)."""
    def target(args):
        import torch
        import torch.distributed as dist

        from megacode import train
        from megacode.training import trainer

        original = trainer.train_step

        def train_step(run):
            if run.state.step + 1 != step:
                return original(run)
            before = snapshot(run)
            result = original(run)
            after = snapshot(run)
            changed = [k for k, v in before["tensors"].items() if not torch.equal(v, after["tensors"][k])]
            (out / f"watch_rank{dist.get_rank()}.json").write_text(json.dumps({
                "compared": len(before["tensors"]), "changed": changed, "skipped": result.skipped,
                "scheduler_steps": [before["scheduler_steps"], after["scheduler_steps"]],
                "consumed": [before["consumed"], after["consumed"]]}))
            return result

        trainer.train_step = train_step
        return train.main(args)

    return target

#!/usr/bin/env python
"""Training step time: megacode's loop against a bare Megatron-Core loop, side by side in one run.

    python tools/bench_train.py [--layout 1rank|tp2pp2|both] [--repeats 3] [--steps 12] [--warmup 3]
    python tools/bench_train.py --checkpoint [--save-every 4]     # also: the stall a save causes
    python tools/bench_train.py --layout tp2pp2 data.loader=python  # config overrides for both loops

megacode: `python -m torch.distributed.run ... -m megacode.train --config ...` as a user runs it:
the real data loader over an indexed dataset on disk (a corpus of the Python standard library,
a 496-piece tokenizer and tools/preprocess_data.py, made once and cached under --cache-dir),
the numerics guard, the watchdog, TensorBoard logging every step.
bare: tools/bench_train_bare.py, the same model, TransformerConfig, DDP, distributed optimizer
and LR schedule built by the same megacode functions, trained by the loop a Megatron-Core user
writes (get_forward_backward_func, optimizer.step) on the first step's micro-batches of the same
dataset, read once and kept in memory.

Each run is its own torchrun (4 gloo ranks for tp2pp2), megacode and bare alternating --repeats
times. A step's time is the wall time between the ends of consecutive steps (all of the loop's
work in between counts), the first --warmup steps left out; a loop's step time is the median
over all rounds, the ratio the median of the rounds' ratios (the two runs of a round ran back to
back, under the same load). The model is the tiny flavor at seq 512 with 8 micro-batches of 4 per step (about 1.6 s
a step on a quiet 2-core machine). On a CUDA machine the layouts that fit its GPUs run on them
(NCCL); tools/gpu_check.py uses `compare` for a 7B-shaped model.

--checkpoint: megacode alone, saving every --save-every steps, with `checkpoint.async_save`
false and true: the stall is the step time right after a save minus the median step time away
from saves (median over saves); "excess/save" spreads all the extra time of a run over its saves.

The last line is `megacode/bare step time: R` (the larger ratio when both layouts ran).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from megacode.distributed.local_launch import free_port, killed_after  # noqa: E402

TINY_CONFIG = REPO / "configs" / "tiny" / "pretrain.yaml"
LAYOUTS = {"1rank": (1, ["parallel.tp=1", "parallel.pp=1"]),
           "tp2pp2": (4, ["parallel.tp=2", "parallel.pp=2"])}
SEQ, MICRO_BATCH, MICRO_BATCHES = 512, 4, 8
TINY_SHAPE = [f"data.seq_length={SEQ}", f"train.micro_batch_size={MICRO_BATCH}",
              f"train.global_batch_tokens={SEQ * MICRO_BATCH * MICRO_BATCHES}"]  # DP 1 in both layouts
COMMON = ["train.eval_interval=0", "schedule.warmup_iters=2", "checkpoint.dir=null", "checkpoint.load=null"]


# ---- data: a real indexed dataset, made with the repo's tools once -----------------------------

def ensure_data(cache_dir: Path) -> dict:
    """{prefix, tokenizer, cache}: an indexed dataset of standard-library code (~0.9M tokens)."""
    root = cache_dir / "data-v1"
    done = {"prefix": str(root / "code_text_document"), "tokenizer": str(root / "tokenizer.model"),
            "cache": str(root / "index-cache")}
    if (root / "code_text_document.idx").exists():
        return done
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="data-", dir=cache_dir))
    started = time.time()
    print(f"making the benchmark dataset in {root} (once) ...", flush=True)
    for command in (["tools/quickstart_assets.py", "corpus", "--out", str(work / "corpus"), "--files", "200"],
                    ["tools/quickstart_assets.py", "tokenizer", "--corpus", str(work / "corpus"),
                     "--out", str(work / "tokenizer.model")],
                    ["tools/preprocess_data.py", "--input", str(work / "corpus" / "code.jsonl"), "--output-prefix",
                     str(work / "code"), "--tokenizer-model", str(work / "tokenizer.model"), "--append-eod",
                     "--workers", "1", "--log-interval", "1000000"]):
        proc = subprocess.run([sys.executable] + command, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"bench_train: {' '.join(command[:2])} failed:\n{proc.stderr[-3000:]}")
    if root.exists():  # another bench made it meanwhile
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    else:
        os.replace(work, root)
    print(f"dataset ready in {time.time() - started:.0f} s", flush=True)
    return done


def data_overrides(data: dict) -> list[str]:
    return [f"data.paths=[{{path: {data['prefix']}}}]", f"data.tokenizer_model={data['tokenizer']}",
            f"data.cache_dir={data['cache']}", "data.split=100,0"]


# ---- one run: a torchrun of megacode.train or of the bare loop ---------------------------------

def torchrun(nproc: int, args: list[str], log: Path, timeout: float = 1800) -> None:
    """torchrun in its own session, killed whole afterwards (a checkpoint writer's manager
    process must not outlive it); output to `log`."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port())] + args
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with open(log, "w") as out:
        with killed_after(subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True)) as proc:
            code = proc.wait(timeout=timeout)
    if code != 0:
        raise SystemExit(f"bench_train: {' '.join(args[:2])} failed ({code}); its output, {log}:\n"
                         f"{log.read_text()[-4000:]}")


@dataclass
class Timing:
    intervals: list
    """Seconds between the ends of consecutive steps after the warm-up."""
    first_step_end: float
    """Seconds from launching torchrun to the end of step 1 (start-up plus one step)."""
    after_save: list = field(default_factory=list)
    """Intervals that hold a checkpoint save (the loop saves right after the step ends)."""


def step_intervals(ends: list[float], warmup: int, save_every: int = 0) -> tuple[list, list]:
    """(intervals of steps > warmup away from saves, those right after a save); step i's
    interval is ends[i] - ends[i-1] (1-based steps)."""
    plain, saved = [], []
    for step in range(max(warmup, 1) + 1, len(ends) + 1):
        interval = ends[step - 1] - ends[step - 2]
        (saved if save_every and (step - 1) % save_every == 0 else plain).append(interval)
    return plain, saved


def run_megacode(config: Path, overrides: list[str], nproc: int, warmup: int, work: Path, name: str,
                 save_every: int = 0) -> Timing:
    history = work / f"{name}.json"
    launched = time.time()
    torchrun(nproc, ["-m", "megacode.train", "--config", str(config), "--history-json", str(history)] + overrides,
             work / f"{name}.log")
    ends = [step["finished_at"] for step in json.loads(history.read_text())]
    plain, saved = step_intervals(ends, warmup, save_every)
    return Timing(plain, ends[0] - launched, saved)


def run_bare(config: Path, overrides: list[str], nproc: int, warmup: int, work: Path, name: str) -> Timing:
    out = work / f"{name}.json"
    launched = time.time()
    torchrun(nproc, [str(REPO / "tools" / "bench_train_bare.py"), "--config", str(config), "--out", str(out)]
             + overrides, work / f"{name}.log")
    ends = json.loads(out.read_text())["finished_at"]
    return Timing(step_intervals(ends, warmup)[0], ends[0] - launched)


# ---- comparisons -------------------------------------------------------------------------------

@dataclass
class Comparison:
    megacode: list = field(default_factory=list)
    bare: list = field(default_factory=list)

    @property
    def ratios(self) -> list:
        """megacode/bare of each round: the two runs of a round ran back to back, under the same
        load; rounds apart may not have (a shared machine)."""
        return [statistics.median(m.intervals) / statistics.median(b.intervals)
                for m, b in zip(self.megacode, self.bare)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def median_step(timings: list[Timing]) -> float:
    return statistics.median([x for t in timings for x in t.intervals])


def compare(config: Path, overrides: list[str], megacode_only: list[str], nproc: int, repeats: int, warmup: int,
            work: Path, label: str) -> Comparison:
    """megacode and bare alternating `repeats` times on the same config and overrides;
    `megacode_only`: what the bare loop has no use for (logging)."""
    result = Comparison()
    for repeat in range(repeats):
        started = time.time()
        result.megacode.append(run_megacode(config, overrides + megacode_only, nproc, warmup, work,
                                            f"{label}_megacode_{repeat}"))
        result.bare.append(run_bare(config, overrides, nproc, warmup, work, f"{label}_bare_{repeat}"))
        megacode_s, bare_s = (statistics.median(t[-1].intervals) for t in (result.megacode, result.bare))
        print(f"{label} round {repeat + 1}/{repeats}: megacode {megacode_s:.4f} s, bare {bare_s:.4f} s per step "
              f"({time.time() - started:.0f} s)", flush=True)
    return result


def checkpoint_stall(config: Path, overrides: list[str], nproc: int, warmup: int, save_every: int, saves: int,
                     work: Path, label: str) -> dict:
    """{"blocking": Timing, "async": Timing or a reason it did not run}; `saves` timed saves each."""
    from megacode.config.schema import CheckpointConfig

    first = max(1, -(-warmup // save_every)) * save_every  # the first save whose next step is timed
    steps = first + (saves - 1) * save_every + 1
    out = {}
    for mode in ("blocking", "async"):
        if mode == "async" and "async_save" not in CheckpointConfig.__dataclass_fields__:
            out[mode] = "skipped: this megacode has no checkpoint.async_save"
            continue
        ckpt = Path(tempfile.mkdtemp(prefix=f"ckpt-{mode}-", dir=work))
        extra = [f"checkpoint.dir={ckpt}", f"checkpoint.interval={save_every}", "checkpoint.save_at_end=false",
                 f"train.iters={steps}"]
        if "async_save" in CheckpointConfig.__dataclass_fields__:
            extra.append(f"checkpoint.async_save={str(mode == 'async').lower()}")
        out[mode] = run_megacode(config, overrides + extra, nproc, warmup, work, f"{label}_ckpt_{mode}", save_every)
        print(f"{label} checkpoint {mode}: {len(out[mode].after_save)} saves", flush=True)
    return out


def stall_line(label: str, mode: str, timing) -> str:
    if isinstance(timing, str):
        return f"{label:7s} {mode:9s} {timing}"
    base = statistics.median(timing.intervals)
    stalls = [s - base for s in timing.after_save]
    excess = (sum(timing.intervals) + sum(timing.after_save)
              - base * (len(timing.intervals) + len(timing.after_save))) / max(len(timing.after_save), 1)
    return (f"{label:7s} {mode:9s} step {base:8.4f} s | stall at a save {statistics.median(stalls):8.4f} s "
            f"(each: {', '.join(f'{s:.3f}' for s in stalls)}) | excess/save {excess:8.4f} s")


def print_table(results: dict, stalls: dict) -> float:
    print()
    print(f"{'layout':7s} {'loop':9s} {'median step s':>14s} {'per round':>28s} {'to step 1 s':>12s}")
    ratios = {}
    for label, comp in results.items():
        for name, timings in (("megacode", comp.megacode), ("bare", comp.bare)):
            rounds = " ".join(f"{statistics.median(t.intervals):.3f}" for t in timings)
            first = statistics.median([t.first_step_end for t in timings])
            print(f"{label:7s} {name:9s} {median_step(timings):14.4f} {rounds:>28s} {first:12.1f}")
        ratios[label] = comp.ratio
        print(f"{label:7s} megacode/bare step time: {comp.ratio:.4f} (median of the rounds' "
              f"{', '.join(f'{r:.3f}' for r in comp.ratios)})")
    for label, modes in stalls.items():
        lines = [stall_line(label, mode, timing) for mode, timing in modes.items()]
        print("\n".join(lines))
        blocking, asynchronous = modes.get("blocking"), modes.get("async")
        if isinstance(blocking, Timing) and isinstance(asynchronous, Timing):
            b = statistics.median([s - statistics.median(blocking.intervals) for s in blocking.after_save])
            a = statistics.median([s - statistics.median(asynchronous.intervals) for s in asynchronous.after_save])
            print(f"{label:7s} save stall blocking/async: {b / a if a > 0 else float('inf'):.1f}x "
                  f"({b:.3f} s vs {a:.3f} s)")
    return max(ratios.values()) if ratios else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", choices=["1rank", "tp2pp2", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=3, help="megacode/bare pairs per layout")
    parser.add_argument("--steps", type=int, default=12, help="steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing")
    parser.add_argument("--checkpoint", action="store_true", help="also measure the step-time stall of a save")
    parser.add_argument("--save-every", type=int, default=4, help="with --checkpoint: steps between saves")
    parser.add_argument("--saves", type=int, default=3, help="with --checkpoint: timed saves per run")
    parser.add_argument("--cache-dir", type=Path, default=Path(os.path.expanduser("~/.cache/megacode/bench_train")))
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, histories)")
    parser.add_argument("overrides", nargs="*", help="config overrides for both loops, e.g. data.loader=python")
    args = parser.parse_args(argv)
    if args.steps <= args.warmup + 1:
        parser.error(f"--steps {args.steps} leaves no timed step after --warmup {args.warmup}")
    import torch

    layouts = ["1rank", "tp2pp2"] if args.layout == "both" else [args.layout]
    if torch.cuda.is_available():  # NCCL, one GPU per rank: only the layouts the GPUs hold
        runnable = [name for name in layouts if LAYOUTS[name][0] <= torch.cuda.device_count()]
        for name in sorted(set(layouts) - set(runnable)):
            print(f"SKIP {name}: needs {LAYOUTS[name][0]} GPUs, {torch.cuda.device_count()} present")
        layouts = runnable
    data = ensure_data(args.cache_dir)
    work = Path(tempfile.mkdtemp(prefix="megacode-bench-train-"))
    print(f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'} | "
          f"runs in {work}", flush=True)
    results, stalls = {}, {}
    for label in layouts:
        nproc, layout = LAYOUTS[label]
        overrides = layout + TINY_SHAPE + COMMON + data_overrides(data) + args.overrides
        megacode_only = [f"logging.dir={work / (label + '_tb')}", "logging.interval=1"]
        results[label] = compare(TINY_CONFIG, overrides + [f"train.iters={args.steps}"], megacode_only, nproc,
                                 args.repeats, args.warmup, work, label)
        if args.checkpoint:
            stalls[label] = checkpoint_stall(TINY_CONFIG, overrides + megacode_only, nproc, args.warmup,
                                             args.save_every, args.saves, work, label)
    worst = print_table(results, stalls)
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print(f"megacode/bare step time: {worst:.4f}" + (f" (larger of {', '.join(results)})" if len(results) > 1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

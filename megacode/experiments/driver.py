"""One experiment from config to report: assets, training runs, evaluation, outputs.

    results = reproduce(cfg, out=Path("runs/reproduce/fim"), scale="small")

Writes OUT/results.json, OUT/report.md, OUT/<experiment>.png and OUT/reproduce.log (the
progress lines); the runs are under OUT/runs/, the shared cache under `cache_dir` (OUT/cache
unless given).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Optional

from megacode.experiments.config import ExperimentConfig
from megacode.experiments.launch import format_duration


class ProgressLog:
    """Timestamped progress lines (elapsed time of the experiment) to stdout and OUT/reproduce.log;
    megacode.eval's log records (scoring ETAs) go the same way."""

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.start = name, time.monotonic()
        self.file = open(path, "a", encoding="utf-8")
        self.handler = _Forward(self)
        logging.getLogger("megacode.eval").addHandler(self.handler)
        logging.getLogger("megacode.eval").setLevel(logging.INFO)

    def __call__(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')} {self.name} +{format_duration(time.monotonic() - self.start)}] {message}"
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()

    def close(self) -> None:
        logging.getLogger("megacode.eval").removeHandler(self.handler)
        self.file.close()


class _Forward(logging.Handler):
    def __init__(self, log: ProgressLog) -> None:
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log(record.getMessage())


def reproduce(cfg: ExperimentConfig, out: Path, scale: str, cache_dir: Optional[Path] = None,
              reuse: bool = False) -> dict:
    """Run the experiment `cfg.experiment` and write its outputs under `out`; returns the results."""
    from megacode.experiments import fim, lcft
    from megacode.experiments.assets import prepare
    from megacode.experiments.report import write_outputs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = ProgressLog(cfg.experiment, out / "reproduce.log")
    start = time.monotonic()
    try:
        log(f"{cfg.experiment} at scale {scale}: outputs in {out}; {sys.executable}")
        assets = prepare(cfg, Path(cache_dir) if cache_dir else out / "cache", log)
        module = fim if cfg.experiment == "fim" else lcft
        results = {"experiment": cfg.experiment, "scale": scale}
        results.update(module.run(cfg, assets, out, log, reuse))
        results["seconds"] = time.monotonic() - start
        results["corpus"] = assets.corpus
        results["config"] = dataclasses.asdict(cfg)
        written = write_outputs(results, out)
        for check in results["checks"]:
            log(f"{'holds' if check['holds'] else 'DOES NOT HOLD'}: {check['expected']}: {check['measured']}")
        log(f"done in {format_duration(results['seconds'])}: " + ", ".join(str(p) for p in written))
        return results
    finally:
        log.close()

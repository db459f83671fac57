"""Runs self-instruct stages in order and keeps counts.json in step with the files.

Counts are recomputed from the stage files after every stage, never carried in memory, so they
describe exactly what is on disk, also after a resumed or partial run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional, Sequence

from megacode.eval.generate import TextGenerator
from megacode.eval.sandbox import Sandbox
from megacode.selfinstruct.config import SelfInstructConfig
from megacode.selfinstruct.stages import FILES, RUNNERS, STAGES, Resources
from megacode.selfinstruct.store import read_jsonl

log = logging.getLogger(__name__)


def parse_stages(text: str) -> list[str]:
    """'all', one stage, or a comma-separated list; returned in pipeline order."""
    if text == "all":
        return list(STAGES)
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown or not names:
        raise ValueError(f"unknown stage(s) {unknown or text!r}; stages are {', '.join(STAGES)} or all")
    return [s for s in STAGES if s in names]


def count(output_dir: str | Path) -> dict[str, int]:
    out = Path(output_dir)
    read = {key: read_jsonl(out / name) for key, name in FILES.items()}
    candidates = read["generate"]
    executions = read["execute"]
    statuses = [s for row in executions for s in row["statuses"]]
    return {
        "question_rounds": len(read["questions"]),
        "questions_generated": sum(len(row["questions"]) for row in read["questions"]),
        "questions_unique": len(read["dedup"]),
        "questions_with_tests": sum(1 for row in candidates if row["tests"]),
        "tests": sum(len(row["tests"]) for row in candidates),
        "solutions_generated": sum(len(row["solutions"]) for row in candidates),
        "solutions_parsed": sum(1 for row in candidates for s in row["solutions"] if s is not None),
        "solutions_executed": sum(1 for s in statuses if s != "unparsed"),
        "solutions_passed": statuses.count("passed"),
        "solutions_failed": statuses.count("failed"),
        "solutions_timed_out": statuses.count("timed_out"),
        "solutions_crashed": statuses.count("crashed"),
        "questions_with_passing_solution": sum(1 for row in executions if row["kept"] is not None),
        "triplets": len(read["triplets"]),
        "dialogs": len(read["dialogs"]),
    }


def run(cfg: SelfInstructConfig, stages: Sequence[str] = STAGES, question_generator: Optional[TextGenerator] = None,
        code_generator: Optional[TextGenerator] = None, sandbox: Optional[Sandbox] = None) -> dict[str, int]:
    """Run `stages` (in pipeline order); return and write the counts."""
    res = Resources(cfg, question_generator, code_generator, sandbox)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for stage in stages:
        started = time.monotonic()
        RUNNERS[stage](res)
        counts = count(out)
        (out / "counts.json").write_text(json.dumps(counts, indent=2) + "\n")
        log.info("stage %s done in %.1fs: %s", stage, time.monotonic() - started,
                 ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    return counts

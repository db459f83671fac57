"""MBPP (Austin et al. 2021, arXiv 2108.07732) from a local JSONL file, 3-shot as in the paper.

Code Llama (Table 2) reports MBPP 3-shot with the MBPP paper's prompt. The dataset's README
(google-research/mbpp) gives it as

    You are an expert Python programmer, and here is your task: {text} Your code should pass
    these tests:\\n\\n{tests}\\n[BEGIN]\\n{code}\\n[DONE]

with tests one per line, task ids 2, 3 and 4 as the shots and task ids 11-510 as the test split
(1-10 were kept for prompting). The model's answer ends at [DONE]. The file is the original
`mbpp.jsonl` (fields task_id, text, code, test_list, test_setup_code, challenge_test_list);
nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from megacode.eval.problems import Problem, jsonl_rows

SHOT_IDS = (2, 3, 4)
TEST_IDS = range(11, 511)
STOP = ["[DONE]"]
REQUIRED = {"task_id": int, "text": str, "code": str, "test_list": list}


def task_prompt(text: str, tests: Sequence[str]) -> str:
    """The question part of one MBPP example, up to and including [BEGIN]."""
    joined = "\n".join(tests)
    return (f"You are an expert Python programmer, and here is your task: {text} "
            f"Your code should pass these tests:\n\n{joined}\n[BEGIN]\n")


def shot(row: dict) -> str:
    return task_prompt(row["text"], row["test_list"]) + f"{_lf(row['code'])}\n[DONE]\n"


def read_mbpp(path: Path) -> dict[int, dict]:
    """task_id -> row, each row checked; errors name the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MBPP file not found: {path}")
    rows: dict[int, dict] = {}
    for number, row in jsonl_rows(path):
        for key, kind in REQUIRED.items():
            if not isinstance(row.get(key), kind) or isinstance(row.get(key), bool):
                raise ValueError(f"{path}:{number}: field {key!r} must be {kind.__name__}, got {row.get(key)!r:.80}")
        if not all(isinstance(t, str) for t in row["test_list"]):
            raise ValueError(f"{path}:{number}: test_list must hold strings")
        if row["task_id"] in rows:
            raise ValueError(f"{path}:{number}: task_id {row['task_id']} appears twice")
        rows[row["task_id"]] = row
    return rows


def load_mbpp(path: Path, task_ids: Optional[Sequence[int]] = None, shot_ids: Sequence[int] = SHOT_IDS) -> list[Problem]:
    """Problems for `task_ids` (default: the test split 11-510 present in the file), each prompt
    led by the shots; the shots themselves are never evaluated."""
    rows = read_mbpp(path)
    missing_shots = [i for i in shot_ids if i not in rows]
    if missing_shots:
        raise ValueError(f"{path}: the few-shot task ids {missing_shots} are not in the file")
    prefix = "".join(shot(rows[i]) for i in shot_ids)
    if task_ids is None:
        ids = [i for i in TEST_IDS if i in rows]
    else:
        absent = [i for i in task_ids if i not in rows]
        if absent:
            raise ValueError(f"{path}: task ids {absent[:5]} are not in the file")
        ids = [i for i in task_ids if i not in shot_ids]
    if not ids:
        raise ValueError(f"{path}: no MBPP problems to evaluate (test split is task ids 11-510)")
    problems = []
    for task_id in ids:
        row = rows[task_id]
        setup = _lf(row.get("test_setup_code") or "")
        problems.append(Problem(
            task_id=f"MBPP/{task_id}",
            prompt=prefix + task_prompt(row["text"], row["test_list"]),
            program_prefix=setup + "\n" if setup else "",
            test="\n".join(_lf(t) for t in row["test_list"]) + "\n",
            stop=list(STOP),
        ))
    return problems


def reference_solutions(path: Path) -> dict[str, str]:
    """task id -> the dataset's own solution (for checking the harness)."""
    return {f"MBPP/{i}": _lf(row["code"]) + "\n" for i, row in read_mbpp(path).items()}


def _lf(text: str) -> str:
    """The original file stores code with Windows line ends."""
    return text.replace("\r\n", "\n")

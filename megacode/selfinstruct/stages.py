"""The self-instruct stages. Each reads the previous stage's file, writes its own, and resumes
from what it finds there, so any stage can be rerun alone or after a crash.

    questions  questions_raw.jsonl  one row per question prompt sample: {round, questions, text}
    dedup      questions.jsonl      exact duplicates removed, first occurrence kept: {qid, question}
    generate   candidates.jsonl     per question: {qid, question, tests, tests_text, solutions}
                                    (solutions: ten per question, None where no [PYTHON] block)
    execute    executions.jsonl     per question: {qid, statuses, reasons, kept}: every solution
                                    run in the sandbox with the question's tests; kept = the first
                                    that passed, or None
    write      triplets.jsonl       {qid, question, tests, solution} for kept solutions
               dialogs.jsonl        {"messages": [...], "source": "self-instruct"} for the
                                    instruct stage's data loader
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from megacode.eval.generate import GenerationSettings, HFGenerator, TextGenerator
from megacode.eval.problems import RUN_NAME
from megacode.eval.sandbox import Sandbox
from megacode.eval.sandbox_config import SandboxJob
from megacode.selfinstruct import prompts
from megacode.selfinstruct.config import SelfInstructConfig
from megacode.selfinstruct.store import append_jsonl, chunks, read_jsonl, write_jsonl

log = logging.getLogger(__name__)

FILES = {"questions": "questions_raw.jsonl", "dedup": "questions.jsonl", "generate": "candidates.jsonl",
         "execute": "executions.jsonl", "triplets": "triplets.jsonl", "dialogs": "dialogs.jsonl"}
STAGES = ("questions", "dedup", "generate", "execute", "write")
# Seed offsets keep the stages' sampling streams apart.
_SEED_QUESTIONS, _SEED_TESTS, _SEED_SOLUTIONS = 0, 10_000_000, 20_000_000


@dataclass
class Resources:
    """Models and sandbox, created on first use: a stage that needs none loads none. Generators
    given here (any `TextGenerator`) replace the HF models."""

    cfg: SelfInstructConfig
    question_generator: Optional[TextGenerator] = None
    code_generator: Optional[TextGenerator] = None
    sandbox: Optional[Sandbox] = None

    def questions_model(self) -> TextGenerator:
        if self.question_generator is None:
            self.question_generator = _load(self.cfg.question_model, "question_model", self.cfg.question_generation)
        return self.question_generator

    def code_model(self, settings: GenerationSettings) -> TextGenerator:
        if self.code_generator is None:
            self.code_generator = _load(self.cfg.code_model, "code_model", settings)
        if isinstance(self.code_generator, HFGenerator):
            return self.code_generator.with_settings(settings)  # one model, greedy tests, sampled solutions
        return self.code_generator

    def get_sandbox(self) -> Sandbox:
        if self.sandbox is None:
            self.sandbox = Sandbox(self.cfg.sandbox)
            log.info(self.sandbox.isolation.describe())
        return self.sandbox

    def path(self, key: str) -> Path:
        return Path(self.cfg.output_dir) / FILES[key]


def _load(model_dir: Optional[str], name: str, settings: GenerationSettings) -> TextGenerator:
    if not model_dir:
        raise ValueError(f"{name} is not set: give the Hugging Face directory of the model")
    return HFGenerator(model_dir, settings)


def _touch(path: Path) -> None:
    """A stage's file exists once the stage has run, even when it produced no rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def _require(res: Resources, key: str, stage: str) -> list[dict]:
    path = res.path(key)
    if not path.exists():
        raise FileNotFoundError(f"stage {stage} needs {path}: run the earlier stage first")
    return read_jsonl(path)


def questions(res: Resources) -> None:
    cfg, path = res.cfg, res.path("questions")
    done = {row["round"] for row in read_jsonl(path)}
    todo = [r for r in range(cfg.rounds) if r not in done]
    _touch(path)
    if not todo:
        return
    generator = res.questions_model()
    prompt = prompts.questions_prompt(cfg.questions_per_prompt)
    for chunk in tqdm(list(chunks(todo, cfg.question_generation.batch_size)), desc="questions", unit="chunk"):
        texts = generator.generate([prompt], prompts.QUESTIONS_STOP, len(chunk), desc="question prompts",
                                   seed=cfg.seed + _SEED_QUESTIONS + chunk[0])[0]
        append_jsonl(path, ({"round": r, "questions": prompts.parse_questions(t), "text": t}
                            for r, t in zip(chunk, texts)))


def dedup(res: Resources) -> None:
    rows = sorted(_require(res, "questions", "dedup"), key=lambda row: row["round"])
    if len(rows) < res.cfg.rounds:
        log.warning("dedup: only %d of %d question rounds are done", len(rows), res.cfg.rounds)
    seen: dict[str, int] = {}
    for row in rows:
        for question in row["questions"]:
            seen.setdefault(question, len(seen))  # exact duplicates only, as in the paper
    write_jsonl(res.path("dedup"), ({"qid": qid, "question": q} for q, qid in seen.items()))


def generate(res: Resources) -> None:
    cfg, path = res.cfg, res.path("generate")
    done = {row["qid"] for row in read_jsonl(path)}
    todo = [row for row in _require(res, "dedup", "generate") if row["qid"] not in done]
    _touch(path)
    if not todo:
        return
    tests_model = res.code_model(cfg.test_generation)
    solutions_model = res.code_model(cfg.solution_generation)
    n = cfg.solutions_per_question
    for chunk in tqdm(list(chunks(todo, cfg.chunk_size)), desc="tests+solutions", unit="chunk"):
        first = chunk[0]["qid"]
        test_texts = tests_model.generate([prompts.tests_prompt(r["question"], cfg.tests_per_question) for r in chunk],
                                          prompts.TESTS_STOP, 1, desc="tests", seed=cfg.seed + _SEED_TESTS + first)
        tests = [prompts.parse_tests(texts[0]) for texts in test_texts]
        with_tests = [i for i, t in enumerate(tests) if t]
        solution_texts: dict[int, list[str]] = {}
        if with_tests:
            outputs = solutions_model.generate(
                [prompts.solution_prompt(chunk[i]["question"], tests[i][0]) for i in with_tests],
                prompts.SOLUTION_STOP, n, desc="solutions", seed=cfg.seed + _SEED_SOLUTIONS + first)
            solution_texts = dict(zip(with_tests, outputs))
        append_jsonl(path, ({"qid": row["qid"], "question": row["question"], "tests": tests[i],
                             "tests_text": test_texts[i][0],
                             "solutions": [prompts.parse_solution(t) for t in solution_texts.get(i, [])]}
                            for i, row in enumerate(chunk)))


def execute(res: Resources) -> None:
    cfg, path = res.cfg, res.path("execute")
    done = {row["qid"] for row in read_jsonl(path)}
    todo = [row for row in _require(res, "generate", "execute") if row["qid"] not in done]
    _touch(path)
    if not todo:
        return
    sandbox = res.get_sandbox()
    for chunk in tqdm(list(chunks(todo, cfg.chunk_size)), desc="execute", unit="chunk"):
        where, jobs = [], []
        for row_index, row in enumerate(chunk):
            for sol_index, code in enumerate(row["solutions"]):
                if code is not None and row["tests"]:
                    where.append((row_index, sol_index))
                    jobs.append(SandboxJob(code, "\n".join(row["tests"]) + "\n", run_name=RUN_NAME))
        results = sandbox.run_many(jobs, desc="sandbox") if jobs else []
        statuses = [["unparsed"] * len(row["solutions"]) for row in chunk]
        reasons = [[""] * len(row["solutions"]) for row in chunk]
        for (r, s), result in zip(where, results):
            statuses[r][s], reasons[r][s] = result.status, result.reason[:300]
        append_jsonl(path, ({"qid": row["qid"], "statuses": statuses[i], "reasons": reasons[i],
                             "kept": next((j for j, st in enumerate(statuses[i]) if st == "passed"), None)}
                            for i, row in enumerate(chunk)))


def write(res: Resources) -> None:
    cfg = res.cfg
    candidates = {row["qid"]: row for row in _require(res, "generate", "write")}
    triplets = []
    for row in sorted(_require(res, "execute", "write"), key=lambda r: r["qid"]):
        if row["kept"] is None:
            continue
        candidate = candidates[row["qid"]]
        if row["statuses"][row["kept"]] != "passed":  # files edited by hand or from another run
            raise ValueError(f"{res.path('execute')}: qid {row['qid']} keeps solution {row['kept']}, "
                             f"whose status is {row['statuses'][row['kept']]!r}")
        triplets.append({"qid": row["qid"], "question": candidate["question"], "tests": candidate["tests"],
                         "solution": candidate["solutions"][row["kept"]]})
    write_jsonl(res.path("triplets"), triplets)
    write_jsonl(res.path("dialogs"), (dialog(cfg, t) for t in triplets))


def dialog(cfg: SelfInstructConfig, triplet: dict) -> dict:
    """One triplet as the instruct stage's dialog record."""
    answer = cfg.answer_template.format(solution=triplet["solution"], tests=prompts.format_tests(triplet["tests"]))
    messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    messages += [{"role": "user", "content": triplet["question"]}, {"role": "assistant", "content": answer}]
    return {"messages": messages, "source": "self-instruct"}


RUNNERS = {"questions": questions, "dedup": dedup, "generate": generate, "execute": execute, "write": write}

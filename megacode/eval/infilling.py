"""Infilling evaluation (Code Llama §3.2, Table 14): greedy infilling pass@1 per prompt layout.

Problems are in the format of OpenAI's human-eval-infilling benchmark (one JSON object a line:
task_id, prompt = the prefix, suffix, canonical_solution = the middle, test, entry_point). For
each layout (`psm`, `spm`) the prompt ids come from `megacode.data.fim.infill_prompt`, the model
(any Hugging Face causal LM directory with a Code Llama `tokenizer.model`) generates greedily
from those ids until <EOT> or EOS, `megacode.data.fim.infill_text` cuts the middle, and the
program prefix + middle + suffix runs in the sandbox with `test` and `check(entry_point)`, as
human-eval-infilling's `check_correctness` assembles it, through `megacode.eval.problems.score`.

Writes, under `output_dir`: for each layout `<layout>/samples.jsonl`, `results.jsonl`,
`per_problem.jsonl`, `summary.{md,json}` (`megacode.eval.runner.write_reports`), and
`summary.json` / `summary.md` with pass@1 per layout.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from megacode.eval.generate import GenerationSettings
from megacode.eval.problems import Problem, Sample, Scored, jsonl_rows, score, write_jsonl
from megacode.eval.sandbox import Sandbox
from megacode.eval.sandbox_config import SandboxConfig

log = logging.getLogger(__name__)

LAYOUTS = ("psm", "spm")
REQUIRED = ("task_id", "prompt", "suffix", "test", "entry_point")


@dataclass
class InfillProblem(Problem):
    """A problem whose program is prefix + middle + suffix (`prompt` and `program_prefix` = the prefix)."""

    suffix: str = ""

    def job(self, completion: str, timeout_s: Optional[float] = None):
        return super().job(completion + self.suffix, timeout_s)


def load_infilling_problems(path: str | Path, limit: Optional[int] = None) -> list[InfillProblem]:
    """Problems from a human-eval-infilling JSONL file (plain or .gz)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"infilling problems file not found: {path}")
    problems: list[InfillProblem] = []
    for number, row in jsonl_rows(path):
        missing = [k for k in REQUIRED if not isinstance(row, dict) or not isinstance(row.get(k), str)]
        if missing:
            raise ValueError(f"{path}:{number}: an infilling problem needs string fields {list(REQUIRED)}; "
                             f"missing or not strings: {missing}")
        test = row["test"] + f"\ncheck({row['entry_point']})\n"
        problems.append(InfillProblem(row["task_id"], row["prompt"], row["prompt"], "\n" + test,
                                      suffix=row["suffix"]))
    if not problems:
        raise ValueError(f"{path}: no problems")
    return problems[:limit] if limit else problems


def score_middles(problems: Sequence[InfillProblem], middles: dict[str, str], sandbox: Sandbox,
                  desc: str = "infill tests") -> Scored:
    """Score one middle per problem (prefix + middle + suffix, then the test): pass@1."""
    samples = [Sample(p.task_id, middles[p.task_id]) for p in problems]
    return score(problems, samples, sandbox, [1], desc=desc)


class InfillGenerator:
    """Greedy generation from token ids with a transformers causal LM, stopping at <EOT> or EOS."""

    def __init__(self, model_dir: str | Path, settings: GenerationSettings):
        import torch
        from transformers import AutoModelForCausalLM

        from megacode.data.fim import require_infill
        from megacode.tokenizer import load

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"--model {model_dir} is not a Hugging Face model directory (no config.json)")
        if not (model_dir / "tokenizer.model").is_file():
            raise FileNotFoundError(f"--model {model_dir} has no tokenizer.model (a Code Llama SentencePiece model)")
        self.tok = load(model_dir / "tokenizer.model")
        require_infill(self.tok, "infilling evaluation")
        device = settings.device if settings.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = settings.dtype if settings.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
        self.device = torch.device(device)
        self.settings = settings
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(self.device).eval()
        log.info("loaded %s on %s (%s)", model_dir, self.device, dtype)

    def _greedy(self, ids: list[int], stops: list[int], max_new_tokens: Optional[int], criteria=None) -> list[int]:
        """Greedy continuation of `ids`, up to the first stop id (excluded)."""
        import torch

        inputs = torch.tensor([ids], device=self.device)
        with torch.no_grad():
            output = self.model.generate(inputs, attention_mask=torch.ones_like(inputs), do_sample=False,
                                         max_new_tokens=max_new_tokens or self.settings.max_new_tokens,
                                         eos_token_id=stops, pad_token_id=stops[0], stopping_criteria=criteria)
        generated = output[0, len(ids):].tolist()
        ends = [generated.index(s) for s in stops if s in generated]
        return generated[:min(ends)] if ends else generated

    def middle(self, prefix: str, suffix: str, spm: bool, max_new_tokens: Optional[int] = None) -> str:
        """The greedy middle between `prefix` and `suffix`: stops at <EOT> or EOS, cut by `infill_text`."""
        from megacode.data.fim import infill_prompt, infill_text

        ids = infill_prompt(self.tok, prefix, suffix, spm)
        stops = [i for i in (self.tok.eot_id, self.tok.eos_id) if i is not None]
        return infill_text(self.tok, self._greedy(ids, stops, max_new_tokens))

    def continuation(self, prefix: str, max_new_tokens: Optional[int] = None, max_lines: Optional[int] = None) -> str:
        """Left-to-right: the greedy continuation of `<s> enc(prefix)` up to EOS (or once it holds
        `max_lines` newlines), decoded without dropping its leading space (so `prefix +
        continuation` is the text the model wrote)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        ids = [self.tok.bos_id] + self.tok.encode(prefix)
        stops = [i for i in (self.tok.eos_id, self.tok.eot_id) if i is not None]
        tok, start = self.tok, len(ids)

        class Lines(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                text = tok.decode_infill(input_ids[0, start:].tolist())
                return torch.tensor([text.count("\n") >= max_lines], device=input_ids.device)

        criteria = StoppingCriteriaList([Lines()]) if max_lines else None
        return self.tok.decode_infill(self._greedy(ids, stops, max_new_tokens, criteria))


def evaluate_infilling(model_dir: str, problems_path: str, modes: Sequence[str] = LAYOUTS,
                       output_dir: str = "runs/eval-infill", settings: Optional[GenerationSettings] = None,
                       sandbox_config: Optional[SandboxConfig] = None, limit: Optional[int] = None) -> dict:
    """Greedy infilling pass@1 per layout; writes the outputs and returns the summary dict."""
    from megacode.eval.runner import write_reports

    if not model_dir or not problems_path:
        raise ValueError("infill needs --model HF_DIR (with a Code Llama tokenizer.model) and --samples "
                         "PROBLEMS.jsonl (human-eval-infilling format: task_id, prompt, suffix, test, entry_point)")
    bad = [m for m in modes if m not in LAYOUTS]
    if bad or not modes:
        raise ValueError(f"infilling layouts must be among {LAYOUTS}, got {list(modes)}")
    problems = load_infilling_problems(problems_path, limit)
    settings = settings or GenerationSettings()
    if not settings.greedy or settings.num_samples != 1:
        raise ValueError("infilling evaluation is greedy pass@1: temperature 0 and one sample per problem")
    generator = InfillGenerator(model_dir, settings)
    sandbox = Sandbox(sandbox_config or SandboxConfig(timeout_s=10.0))
    out = Path(output_dir)
    summary: dict = {"model": str(model_dir), "problems_file": str(problems_path), "problems": len(problems),
                     "max_new_tokens": settings.max_new_tokens, "pass@1": {}}
    for mode in modes:
        middles = {p.task_id: generator.middle(p.program_prefix, p.suffix, mode == "spm") for p in problems}
        write_jsonl(out / mode / "samples.jsonl", ({"task_id": t, "completion": c} for t, c in middles.items()))
        scored = score_middles(problems, middles, sandbox, desc=f"infill {mode} tests")
        write_reports(out / mode, f"infill-{mode}", scored, extra={"model": str(model_dir), "layout": mode})
        summary["pass@1"][mode] = scored.pass_at.get(1, 0.0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = "\n".join(["| layout | problems | pass@1 |", "|---|---|---|"]
                      + [f"| {m} | {len(problems)} | {100 * v:.2f} |" for m, v in summary["pass@1"].items()])
    (out / "summary.md").write_text(table + "\n")
    summary["table"] = table
    return summary

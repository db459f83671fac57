"""Entry points other parts of megacode fill in; where one is still missing, a clear error naming it.

- Infilling (Code Llama §3.2, PSM and SPM prompts): `infill_prompt_ids` and `infill_completion`
  come from megacode.data.fim (`infill_prompt(tok, prefix, suffix, spm)`: BOS, then the inference
  layout of DESIGN.md §1; `infill_text`: the generation cut at <EOT>, decoded without the
  implicit space). The benchmark loop around them (`evaluate_infilling`) is not written yet.
- Evaluating a megacode checkpoint: needs `tools/convert_checkpoint.py megacode-to-hf` to export
  it as a Hugging Face directory, which `HFGenerator` then loads like any other model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[2]


class FeatureMissing(RuntimeError):
    """A mode whose building block is not in this checkout yet; the message says which."""


def infill_prompt_ids(tokenizer, prefix: str, suffix: str, spm: bool) -> list[int]:
    """Token ids of an infilling prompt (a `megacode.tokenizer.Tokenizer` with the infilling pieces)."""
    from megacode.data.fim import infill_prompt

    return infill_prompt(tokenizer, prefix, suffix, spm)


def infill_completion(tokenizer, generated_ids: Sequence[int]) -> str:
    """The infilled middle: generated ids cut at the first <EOT>, decoded without dropping a leading space."""
    from megacode.data.fim import infill_text

    return infill_text(tokenizer, generated_ids)


def evaluate_infilling(model_dir: str, problems_path: str, modes: Sequence[str] = ("psm", "spm"),
                       output_dir: str = "runs/eval-infill") -> dict:
    """Infilling pass@1 per prompt layout (`psm`, `spm`) on single-line/multi-line infilling
    problems. Not implemented: it will generate from `infill_prompt_ids`, stop at <EOT>
    (`infill_completion`), and score prefix + middle + suffix with `megacode.eval.problems.score`."""
    raise FeatureMissing("infilling evaluation is not wired up yet: prompts come from "
                         "megacode.data.fim.infill_prompt(tok, prefix, suffix, spm) and completions are cut at "
                         "<EOT> by megacode.data.fim.infill_text, but the benchmark loop (generation from token ids, "
                         "infilling problems, sandboxed scoring) in megacode.eval.hooks.evaluate_infilling is still "
                         "to be written")


def export_megacode_checkpoint(checkpoint_dir: str, out_dir: str) -> Path:
    """Export a megacode checkpoint to a Hugging Face directory and return it."""
    tool = REPO / "tools" / "convert_checkpoint.py"
    if not tool.is_file():
        raise FeatureMissing(f"evaluating a megacode checkpoint needs {tool.relative_to(REPO)} megacode-to-hf "
                             "(checkpoint export to Hugging Face format), which is not in this checkout yet; "
                             "export the checkpoint to an HF directory and pass --model DIR")
    raise FeatureMissing(f"automatic export is not wired up yet: run `python {tool.relative_to(REPO)} megacode-to-hf` "
                         f"on {checkpoint_dir}, then pass the HF directory with --model")

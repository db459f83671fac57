"""Entry points other parts of megacode will fill in; here only their signatures and a clear
error naming what is missing.

- Infilling evaluation (Code Llama §3.2, PSM and SPM prompts): needs
  `megacode.data.fim.infill_prompt(tok, prefix, suffix, spm)`, which builds the inference layout
  of DESIGN.md §1 (after BOS, up to and including <MID> for PSM, or enc(prefix) for SPM).
- Evaluating a megacode checkpoint: needs `tools/convert_checkpoint.py megacode-to-hf` to export
  it as a Hugging Face directory, which `HFGenerator` then loads like any other model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[2]


class FeatureMissing(RuntimeError):
    """A mode whose building block is not in this checkout yet; the message says which."""


def infill_prompt_ids(tokenizer, prefix: str, suffix: str, spm: bool) -> list[int]:
    """Token ids of an infilling prompt, from the FIM module once it exists."""
    if importlib.util.find_spec("megacode.data") is None or importlib.util.find_spec("megacode.data.fim") is None:
        raise FeatureMissing("infilling evaluation needs megacode.data.fim.infill_prompt(tok, prefix, suffix, spm) "
                             "(the FIM data module), which is not in this checkout yet")
    from megacode.data.fim import infill_prompt  # type: ignore[import-not-found]
    return infill_prompt(tokenizer, prefix, suffix, spm)


def evaluate_infilling(model_dir: str, problems_path: str, modes: Sequence[str] = ("psm", "spm"),
                       output_dir: str = "runs/eval-infill") -> dict:
    """Infilling pass@1 per prompt layout (`psm`, `spm`) on single-line/multi-line infilling
    problems. Not implemented: it will generate from `infill_prompt_ids`, stop at <EOT>, and
    score with `megacode.eval.problems.score` like HumanEval."""
    infill_prompt_ids(None, "", "", spm=False)  # raises FeatureMissing while the FIM module is absent
    raise FeatureMissing("infilling evaluation is not wired up yet: megacode.data.fim exists now, "
                         "implement megacode.eval.hooks.evaluate_infilling on top of it")


def export_megacode_checkpoint(checkpoint_dir: str, out_dir: str) -> Path:
    """Export a megacode checkpoint to a Hugging Face directory and return it."""
    tool = REPO / "tools" / "convert_checkpoint.py"
    if not tool.is_file():
        raise FeatureMissing(f"evaluating a megacode checkpoint needs {tool.relative_to(REPO)} megacode-to-hf "
                             "(checkpoint export to Hugging Face format), which is not in this checkout yet; "
                             "export the checkpoint to an HF directory and pass --model DIR")
    raise FeatureMissing(f"automatic export is not wired up yet: run `python {tool.relative_to(REPO)} megacode-to-hf` "
                         f"on {checkpoint_dir}, then pass the HF directory with --model")

"""Entry points other parts of megacode fill in; where one is still missing, a clear error naming it.

- Infilling (Code Llama §3.2, PSM and SPM prompts): `infill_prompt_ids` and `infill_completion`
  come from megacode.data.fim (`infill_prompt(tok, prefix, suffix, spm)`: BOS, then the inference
  layout of DESIGN.md §1; `infill_text`: the generation cut at <EOT>, decoded without the
  implicit space). The benchmark loop around them is `evaluate_infilling` (megacode.eval.infilling).
- Evaluating a megacode checkpoint: `export_megacode_checkpoint` exports it as a Hugging Face
  directory (megacode.convert, the code behind `tools/convert_checkpoint.py megacode-to-hf`),
  which `HFGenerator` then loads like any other model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


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
                       output_dir: str = "runs/eval-infill", **options) -> dict:
    """Greedy infilling pass@1 per prompt layout (`psm`, `spm`) on human-eval-infilling format
    problems: generation from `infill_prompt_ids`, cut at <EOT> (`infill_completion`), prefix +
    middle + suffix scored with `megacode.eval.problems.score`. See megacode.eval.infilling;
    `options`: settings (GenerationSettings), sandbox_config, limit."""
    from megacode.eval.infilling import evaluate_infilling as run

    return run(model_dir, problems_path, modes, output_dir, **options)


def export_megacode_checkpoint(checkpoint_dir: str, out_dir: str) -> Path:
    """Export a megacode checkpoint (root or `iter_XXXXXXX/`) to `OUT_DIR/hf` and return that
    Hugging Face directory; an existing export there is reused (delete it to re-export)."""
    from megacode.convert.hf_export import ExportOptions, export_hf

    target = Path(out_dir) / "hf"
    if (target / "config.json").is_file():
        return target
    return Path(export_hf(ExportOptions(input=Path(checkpoint_dir), output=target, progress=False)))

"""Instruct data for Code Llama - Instruct (Code Llama §2.5): dialogs in the Llama 2 chat format.

    chat.render(messages, tokenizer) -> RenderedDialog(tokens, loss_mask)   # Llama 2 template
    prepare.prepare_instruct(jsonl_files, tokenizer, prefix)                # tools/prepare_instruct.py
    dataset.DialogDataset                                                   # `kind: dialog` blend entries

A run uses them through `data.paths` entries of `kind: dialog` (configs/codellama-*/stage4_instruct.yaml),
blended with the rehearsal share of stage 1's text datasets.
"""

from megacode.instruct.chat import DialogError, RenderedDialog, inference_prompt, render
from megacode.data.dialog_dataset import LOSS_MASK_SUFFIX, PATH_KINDS, DialogDataset, entry_kind, mask_prefix

__all__ = ["DialogDataset", "DialogError", "LOSS_MASK_SUFFIX", "PATH_KINDS", "RenderedDialog", "entry_kind",
           "inference_prompt", "mask_prefix", "render"]

"""Dialog JSONL → a dialog dataset (tokens + loss mask) for the instruct stage.

Input: JSONL files, one dialog per line, as `megacode.selfinstruct` writes them and as users
bring their own:

    {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...], "source": "..."}

(`source` is optional and only counted). Each dialog is rendered with the Llama 2 chat template
(`megacode.instruct.chat`) and written as one document of two parallel indexed datasets,
`PREFIX` (ids) and `PREFIX_lossmask` (uint8), see `megacode.data.dialog_dataset`. Dialogs that break
the format (roles out of order, a template tag inside a message, an empty message, a last message
from the user, bad JSON) are skipped and counted by reason, and written with their file and line
to `rejects` when asked. A summary goes to `PREFIX.instruct.json`. Inputs are read in the order
given, so the output is a pure function of (inputs, tokenizer).

Writes go to temporary names renamed at the end (the mask first, then the ids), so an interrupted
run never leaves a dataset that opens.
"""

from __future__ import annotations

import collections
import gzip
import io
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from megacode.data.indexed import IndexedDatasetWriter, best_dtype
from megacode.instruct.chat import DialogError, render
from megacode.data.dialog_dataset import mask_prefix

log = logging.getLogger("megacode")

TEMPLATE = "llama2-chat"


@dataclass
class PrepareSummary:
    output_prefix: str
    tokenizer_model: str
    template: str = TEMPLATE
    dialogs: int = 0
    turns: int = 0
    tokens: int = 0
    answer_tokens: int = 0
    """Tokens with loss mask 1 (answers and their closing EOS)."""
    boundary_mismatches: int = 0
    rejected: dict = field(default_factory=dict)
    """reason -> count."""
    sources: dict = field(default_factory=dict)
    """`source` field -> dialogs kept."""
    inputs: list = field(default_factory=list)

    def format(self) -> str:
        share = self.answer_tokens / max(self.tokens, 1)
        rejected = sum(self.rejected.values())
        text = (f"{self.output_prefix}: {self.dialogs} dialogs, {self.turns} turns, {self.tokens} tokens "
                f"({self.answer_tokens} = {share:.1%} under the loss mask); {rejected} rejected")
        if rejected:
            text += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.rejected.items())) + ")"
        return text


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_dialogs(paths: Sequence[str]) -> Iterator[Tuple[str, int, object]]:
    """(file, line number, parsed JSON or a DialogError) for every non-blank line of the inputs."""
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"instruct input {path}: no such file")
        with _open_text(path) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield str(path), number, json.loads(line)
                except json.JSONDecodeError as e:
                    yield str(path), number, DialogError("json", f"not JSON: {e}")


def _messages(record) -> list:
    if isinstance(record, DialogError):
        raise record
    if not isinstance(record, dict) or "messages" not in record:
        raise DialogError("messages", "a dialog line is an object with a `messages` list")
    return record["messages"]


def prepare_instruct(inputs: Sequence[str], tokenizer, output_prefix: str,
                     rejects_path: Optional[str] = None) -> PrepareSummary:
    """Render every dialog of `inputs` and write the dialog dataset at `output_prefix`."""
    summary = PrepareSummary(str(output_prefix), tokenizer.model_path, inputs=[str(p) for p in inputs])
    rejected: collections.Counter = collections.Counter()
    sources: collections.Counter = collections.Counter()
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)
    dtype = best_dtype(tokenizer.vocab_size)
    rejects = open(rejects_path, "w", encoding="utf-8") if rejects_path else None
    masks = IndexedDatasetWriter(mask_prefix(output_prefix), np.uint8)
    ids = IndexedDatasetWriter(output_prefix, dtype)
    try:
        for path, line, record in read_dialogs(inputs):
            try:
                dialog = render(_messages(record), tokenizer)
            except DialogError as e:
                rejected[e.reason] += 1
                if rejects is not None:
                    rejects.write(json.dumps({"file": path, "line": line, "reason": e.reason, "error": str(e)}) + "\n")
                continue
            ids.add_document(dialog.tokens)
            masks.add_document(dialog.loss_mask)
            summary.dialogs += 1
            summary.turns += dialog.turns
            summary.tokens += len(dialog)
            summary.answer_tokens += int(dialog.loss_mask.sum())
            summary.boundary_mismatches += dialog.boundary_mismatch
            sources[str(record.get("source", ""))] += 1
        if summary.dialogs == 0:
            raise ValueError(f"no usable dialog in {', '.join(map(str, inputs))} "
                             f"(rejected: {dict(rejected) or 'none, the inputs are empty'})")
        masks.finalize()  # the ids, which make the dataset visible to readers, appear last
        ids.finalize()
    except BaseException:
        masks.abort()
        ids.abort()
        raise
    finally:
        if rejects is not None:
            rejects.close()
    summary.rejected = dict(sorted(rejected.items()))
    summary.sources = dict(sorted(sources.items()))
    _write_summary(summary)
    return summary


def _write_summary(summary: PrepareSummary) -> None:
    path = f"{summary.output_prefix}.instruct.json"
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(summary), f, indent=1)
    os.replace(tmp, path)


def write_dialogs(path: str, dialogs: Iterable[List[dict]], source: str = "") -> int:
    """Write dialogs (lists of messages) as dialog JSONL; returns how many (tests and demos)."""
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for messages in dialogs:
            f.write(json.dumps({"messages": messages, "source": source}) + "\n")
            count += 1
    return count

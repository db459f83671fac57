"""What a bad step is logged with: step, data position, sample ids, micro-batch losses, documents.

The global batch of the step that starts after `consumed` samples is exactly the sample ids
[consumed, consumed + global batch) (see `megacode.data.batching`). Per micro-batch losses
(gathered only for bad steps) narrow it down: a micro-batch whose loss is NaN/Inf, or for a
spike the one with the highest loss per token, is reported with the documents its samples are
cut from — (dataset prefix, document id, start, end) from the dataset's `pieces` — so
`tools/inspect_data.py` can show the exact tokens. Rank 0 appends one JSON line per bad step.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Optional

log = logging.getLogger("megacode")

MAX_DOCUMENT_SAMPLES = 64  # samples whose documents are listed when no micro-batch stands out


def microbatch_losses(losses_reduced: list, layout, device) -> list[list[tuple[float, float]]]:
    """[dp rank][micro-batch] -> (loss sum, tokens), on every rank (collective over PP and DP)."""
    import torch
    from megatron.core import parallel_state

    table = torch.zeros(layout.dp, layout.num_microbatches, 2, dtype=torch.float64, device=device)
    dp_rank = parallel_state.get_data_parallel_rank()
    for micro, entry in enumerate(losses_reduced):  # only the last pipeline stage holds losses
        table[dp_rank, micro] = entry["lm loss"].to(torch.float64)
    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        torch.distributed.all_reduce(table, group=parallel_state.get_pipeline_model_parallel_group())
    if layout.dp > 1:
        torch.distributed.all_reduce(table, group=parallel_state.get_data_parallel_group())
    return [[(float(s), float(t)) for s, t in row] for row in table.tolist()]


def _suspects(table: list, spike: bool) -> list[tuple[int, int]]:
    """(dp rank, micro) of non-finite micro-batches; for a spike, the highest loss per token."""
    cells = [(d, m) for d, row in enumerate(table) for m, _ in enumerate(row)]
    bad = [(d, m) for d, m in cells if not math.isfinite(table[d][m][0])]
    if bad or not spike:
        return bad
    per_token = {(d, m): table[d][m][0] / max(table[d][m][1], 1.0) for d, m in cells}
    return [max(per_token, key=per_token.get)] if per_token else []


def documents(dataset, indices: list[int]) -> dict[int, Optional[list]]:
    """sample id -> [[prefix, document, start, end], ...], or None when the data has no documents."""
    try:
        from megacode.data.provenance import sample_pieces
    except ImportError:  # older data package: only a PackedDataset's own `pieces`
        sample_pieces = None
    out = {}
    for i in indices:
        try:
            if sample_pieces is not None:
                pieces = sample_pieces(dataset, i)
                out[i] = None if pieces is None else [[p.prefix, p.document, p.start, p.end] for p in pieces]
            elif hasattr(dataset, "pieces"):
                out[i] = [["", int(d), int(s), int(e)] for d, s, e in dataset.pieces(i)]
            else:
                out[i] = None
        except Exception as err:  # noqa: BLE001 - a lookup failure must not hide the bad step
            out[i] = [f"lookup failed: {type(err).__name__}: {err}"]
    return out


def describe(step: int, consumed: int, layout, losses_reduced: list, dataset, problems: list[str],
             loss: float, grad_norm: Optional[float], device) -> dict:
    """All ranks (collective inside); the record rank 0 logs and writes."""
    from megacode.data.batching import sample_indices

    table = microbatch_losses(losses_reduced, layout, device)
    spike = any("spike" in p for p in problems)
    suspects = _suspects(table, spike)
    micro = []
    for dp_rank, m in suspects:
        ids = sample_indices(consumed, m, layout, dp_rank)
        loss_sum, tokens = table[dp_rank][m]
        micro.append({"dp_rank": dp_rank, "micro_batch": m, "samples": [ids.start, ids.stop],
                      "loss_per_token": loss_sum / max(tokens, 1.0)})
    if micro:
        listed = [i for entry in micro for i in range(*entry["samples"])]
    else:
        listed = list(range(consumed, min(consumed + layout.global_batch_size, consumed + MAX_DOCUMENT_SAMPLES)))
    return {
        "step": step, "problems": problems, "loss": loss, "grad_norm": grad_norm,
        "consumed_samples": consumed, "samples": [consumed, consumed + layout.global_batch_size],
        "suspect_micro_batches": micro,
        "documents": {str(i): docs for i, docs in documents(getattr(dataset, "dataset", dataset), listed).items()},
    }


def summary(record: dict) -> str:
    start, end = record["samples"]
    text = (f"step {record['step']}: {', '.join(record['problems'])} | data: samples [{start}, {end}) "
            f"(consumed {record['consumed_samples']})")
    for entry in record["suspect_micro_batches"][:4]:
        a, b = entry["samples"]
        text += f" | suspect micro-batch {entry['micro_batch']} of dp rank {entry['dp_rank']}: samples [{a}, {b})"
    docs = [(i, d) for i, d in record["documents"].items() if d]
    if docs:
        shown = ", ".join(f"sample {i}: " + " + ".join(f"doc {p[1]}[{p[2]}:{p[3]}]" if len(p) == 4 else str(p)
                                                       for p in d) for i, d in docs[:4])
        text += f" | documents: {shown}" + (" ..." if len(docs) > 4 else "")
    return text


def write(path: Optional[Path], record: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(record, default=str) + "\n")

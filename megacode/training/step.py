"""The forward step and loss given to Megatron-Core's pipeline schedules.

Loss is summed over tokens (`calculate_per_token_loss`): each micro-batch returns its loss
sum and token count, Megatron divides the gradients once by the global token count, and the
reported loss is Σ loss / Σ tokens over the whole global batch — identical for any TP/PP/DP
split of the same batch.
"""

from __future__ import annotations

from functools import partial

import torch


def loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """output_tensor: per-token cross entropy `[b, s]` from GPTModel given labels."""
    mask = loss_mask.reshape(-1).float()
    loss_sum = torch.sum(output_tensor.reshape(-1).float() * mask)
    num_tokens = mask.sum().to(torch.int)
    report = torch.stack([loss_sum.detach(), num_tokens.detach().float()])
    return loss_sum, num_tokens, {"lm loss": report}


def forward_step(data_iterator, model):
    batch = next(data_iterator)
    output = model(input_ids=batch["tokens"], position_ids=batch["position_ids"], attention_mask=None,
                   labels=batch["labels"])
    return output, partial(loss_func, batch["loss_mask"])


def loss_totals(losses_reduced: list, device: torch.device) -> torch.Tensor:
    """`[2]` float64 (loss sum, tokens) of this rank's micro-batches (zeros off the last stage)."""
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for entry in losses_reduced:
        totals += entry["lm loss"].to(torch.float64)
    return totals


def reduce_step_loss(losses_reduced: list, device: torch.device) -> tuple[float, int]:
    """(mean loss over the global batch, tokens) on every rank; evaluation uses it (a training
    step reads its loss with everything else at once: megacode.training.step_stats).

    Only the last pipeline stage holds losses; summing over the PP group and then over the DP
    group gives every rank the global sums, so rank 0 can log and all ranks agree on skips.
    """
    from megatron.core import parallel_state

    totals = loss_totals(losses_reduced, device)
    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        torch.distributed.all_reduce(totals, group=parallel_state.get_pipeline_model_parallel_group())
    torch.distributed.all_reduce(totals, group=parallel_state.get_data_parallel_group())
    loss_sum, tokens = totals.tolist()
    return loss_sum / max(tokens, 1.0), int(tokens)

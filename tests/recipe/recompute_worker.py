"""Worker of test_recipe_recompute.py (own process: it owns a world of one and Megatron's state).

Builds the tiny model at TP1 PP1 twice from the same seed, with `parallel.recompute` none and
full, runs one forward/backward on the same batch and prints JSON: both losses, how many times
Megatron-Core's activation checkpoint ran, and whether every gradient is bit-identical."""

import json
import sys
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from megatron.core import parallel_state, tensor_parallel  # noqa: E402
import megatron.core.transformer.transformer_block as transformer_block  # noqa: E402

from megacode.config import load_config, resolve_layout  # noqa: E402
from megacode.models.llama import build_model_chunk, transformer_config  # noqa: E402
from megacode.models.params import _single_process_group  # noqa: E402

calls = []
original = tensor_parallel.checkpoint


def counting_checkpoint(*args, **kwargs):
    calls.append(1)
    return original(*args, **kwargs)


def run(mode: str):
    cfg = load_config(REPO / "configs" / "tiny" / "pretrain.yaml",
                      ["parallel.tp=1", "parallel.pp=1", f"parallel.recompute={mode}"])
    torch.manual_seed(0)
    model = build_model_chunk(cfg, transformer_config(cfg, resolve_layout(cfg, 1)), None, True, True, use_te=False)
    model.train()
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 512, (2, 64), generator=generator)  # [b, s]
    positions = torch.arange(64).expand(2, 64)
    loss = model(tokens, positions, None, labels=tokens).float().mean()
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}


def main() -> None:
    _single_process_group()
    parallel_state.initialize_model_parallel(1, 1)
    tensor_parallel.model_parallel_cuda_manual_seed(1)
    transformer_block.tensor_parallel.checkpoint = counting_checkpoint
    loss_none, grads_none = run("none")
    calls_none = len(calls)
    loss_full, grads_full = run("full")
    print(json.dumps({"loss_none": loss_none, "loss_full": loss_full, "checkpoints_none": calls_none,
                      "checkpoints_full": len(calls) - calls_none,
                      "grads_equal": all(torch.equal(grads_none[k], grads_full[k]) for k in grads_none)}))


if __name__ == "__main__":
    main()

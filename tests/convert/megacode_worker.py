"""Under torchrun: load converted checkpoints into megacode's model at a layout and report.

Usage: megacode_worker.py JOBS.json, a list of jobs run one after another in one process group:

    {"kind": "logits", "checkpoint": ROOT, "layout": [tp, pp, vp], "tokens": FILE.pt, "out": FILE.pt}
        tokens `[b, s+1]` int64; writes (from the last pipeline stage) the full-vocabulary logits
        `[b, s, Vp]` of the first s tokens, gathered across TP, and megacode's own mean loss
        (vocab-parallel cross entropy) of predicting tokens 1..s.
    {"kind": "evaluate", "checkpoint": ROOT, "layout": [tp, pp, vp], "overrides": [...], "out": FILE.json}
        the trainer's `evaluate()` on the run's validation data; writes the loss and what the
        test needs to rebuild the same batches.

The run config is the one stored in the checkpoint, with the layout and batch shape replaced.
"""

from __future__ import annotations

import gc
import json
import sys

import torch
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

from megacode.checkpoint.dist_ckpt import load_checkpoint, read_common, resolve_load_dir
from megacode.config import config_from_dict, resolve_layout
from megacode.config.loader import parse_override
from megacode.distributed.init import init_model_parallel, init_process_group, world_size_from_env
from megacode.models.llama import build_model
from megacode.training.batches import chunk_iterators, collate
from megacode.training.step import forward_step, reduce_step_loss
from megacode.training.trainer import build_run, evaluate


def job_config(job: dict, extra: list[str]):
    target = resolve_load_dir(job["checkpoint"], None)
    tree = read_common(target)["config"]
    tp, pp, vp = job["layout"]
    overrides = [f"parallel.tp={tp}", f"parallel.pp={pp}", f"parallel.vp={vp or 'null'}",
                 f"checkpoint.load={job['checkpoint']}", "checkpoint.finetune=true", "checkpoint.dir=null",
                 "logging.dir=null", "schedule.warmup_iters=0"] + extra + job.get("overrides", [])
    for text in overrides:
        keys, value = parse_override(text)
        node = tree
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    cfg = config_from_dict(tree)
    return cfg, resolve_layout(cfg, world_size_from_env()), target


def run_logits(job: dict) -> None:
    tokens = torch.load(job["tokens"])  # [b, s+1]
    b, s = tokens.shape[0], tokens.shape[1] - 1
    cfg, layout, target = job_config(job, [f"data.seq_length={s}", f"train.global_batch_tokens={b * s}",
                                           "train.micro_batch_size=1"])
    init_model_parallel(layout, cfg.seed)
    model = build_model(cfg, layout)
    load_checkpoint(target, model, None, None, layout, cfg.to_dict(), finetune=True)
    for chunk in model:
        chunk.eval()
    dp_rank = parallel_state.get_data_parallel_rank()
    mine = list(range(dp_rank, b, layout.dp))  # micro-batch m of this DP rank: sample m·dp + dp_rank
    batches = [collate([tokens[i].numpy()]) for i in mine]

    def logits_step(data_iterator, chunk):
        batch = next(data_iterator)
        output = chunk(input_ids=batch["tokens"], position_ids=batch["position_ids"], attention_mask=None)

        def gather(output_tensor, non_loss_data=False):
            return gather_from_tensor_model_parallel_region(output_tensor)  # [1, s, Vp/tp] → [1, s, Vp]
        return output, gather

    schedule = get_forward_backward_func()
    common = dict(model=model, num_microbatches=len(batches), seq_length=s, micro_batch_size=1, forward_only=True)
    with torch.no_grad():
        logits = schedule(forward_step_func=logits_step, data_iterator=chunk_iterators(batches, len(model)),
                          collect_non_loss_data=True, **common)
        losses = schedule(forward_step_func=forward_step, data_iterator=chunk_iterators(batches, len(model)), **common)
    loss, count = reduce_step_loss(losses, torch.device("cpu"))
    last = parallel_state.is_pipeline_last_stage(ignore_virtual=True)
    if last and parallel_state.get_tensor_model_parallel_rank() == 0:
        torch.save({"samples": mine, "logits": torch.cat(logits), "loss": loss, "tokens": count,
                    "layout": [layout.tp, layout.pp, layout.vp, layout.dp]}, f"{job['out']}.dp{dp_rank}")
    del model
    gc.collect()


def run_evaluate(job: dict) -> None:
    cfg, layout, _ = job_config(job, [])
    init_model_parallel(layout, cfg.seed)
    run = build_run(cfg, layout)
    loss = evaluate(run)
    if torch.distributed.get_rank() == 0:
        with open(job["out"], "w") as handle:
            json.dump({"loss": loss, "layout": [layout.tp, layout.pp, layout.vp, layout.dp],
                       "global_batch_size": layout.global_batch_size, "seq_length": cfg.data.seq_length,
                       "eval_iters": cfg.train.eval_iters, "seed": cfg.seed}, handle)
    del run
    gc.collect()


def main() -> None:
    jobs = json.loads(open(sys.argv[1]).read())
    cfg, _, _ = job_config(jobs[0], [])
    init_process_group(cfg.parallel)
    for job in jobs:
        {"logits": run_logits, "evaluate": run_evaluate}[job["kind"]](job)
        torch.distributed.barrier()


if __name__ == "__main__":
    main()

"""Under torchrun: one training step from one checkpoint at several layouts, in one process group.

Usage: equivalence_worker.py CKPT_DIR OUT_JSON "tp,pp,vp,sp;..." — writes (on rank 0) the loss
and grad norm of the first step at each layout.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

from megacode.config import load_config, resolve_layout
from megacode.distributed.init import init_model_parallel, init_process_group, rank_from_env, world_size_from_env
from megacode.training.trainer import build_run, train_step

SHAPE = ["data.seq_length=32", "data.vocab_size=500", "train.global_batch_tokens=512", "train.micro_batch_size=2",
         "train.iters=4", "schedule.warmup_iters=1", "logging.dir=null", "checkpoint.dir=null",
         "checkpoint.finetune=true"]


TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny" / "pretrain.yaml"


def main() -> None:
    ckpt, out, spec = sys.argv[1], sys.argv[2], sys.argv[3]
    results = []
    for index, item in enumerate(spec.split(";")):
        tp, pp, vp, sp = (int(x) for x in item.split(","))
        cfg = load_config(TINY_CONFIG, SHAPE + [f"parallel.tp={tp}", f"parallel.pp={pp}",
                                                f"parallel.vp={vp or 'null'}", f"parallel.sequence_parallel={bool(sp)}",
                                                f"checkpoint.load={ckpt}"])
        layout = resolve_layout(cfg, world_size_from_env())
        if index == 0:
            init_process_group(cfg.parallel)
        init_model_parallel(layout, cfg.seed)
        run = build_run(cfg, layout)
        step = train_step(run)
        results.append({"layout": item, "dp": layout.dp, "loss": step.loss, "grad_norm": step.grad_norm})
        del run
        gc.collect()
    if rank_from_env() == 0:
        with open(out, "w") as handle:
            json.dump(results, handle)


if __name__ == "__main__":
    main()

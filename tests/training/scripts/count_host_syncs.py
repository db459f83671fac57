"""Under torchrun: `megacode.train` as a user runs it, with every host synchronization of the
training thread counted per loop iteration (tests/training/host_syncs.py).

Usage: count_host_syncs.py OUT_PREFIX [--megatron-reference] --config FILE [key=value ...]
Rank r writes OUT_PREFIX.r.json: {"steps": {step: [[kind, where, host_reason], ...]}}, a step's
list holding what ran from the start of that step to the start of the next one (its logging and
stop check included). --megatron-reference runs Megatron-Core's own `finalize_model_grads` and
`get_grad_norm()` instead of megacode's host-read-free versions (for a bit-for-bit comparison).
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import torch  # noqa: E402

from megacode.distributed import cpu_compat  # noqa: E402

if not torch.cuda.is_available():
    cpu_compat.install()  # before counting: it replaces torch.cuda.synchronize

from megacode import train  # noqa: E402
from megacode.training import optimizer, trainer  # noqa: E402
from tests.training.host_syncs import HostSyncCounter  # noqa: E402


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    if argv and argv[0] == "--megatron-reference":
        from megatron.core.distributed import finalize_model_grads

        argv = argv[1:]
        optimizer.finalize_grads = finalize_model_grads  # attach_schedule_hooks hands Megatron's own
        trainer.grad_norm_squared = lambda opt: None  # the trainer then asks optimizer.get_grad_norm()
    counter = HostSyncCounter()
    original = trainer.train_step

    def train_step(run):
        counter.mark(run.state.step + 1)
        return original(run)

    trainer.train_step = train_step
    with counter:
        code = train.main(argv)
    with open(f"{out}.{os.environ.get('RANK', '0')}.json", "w") as handle:
        json.dump({"steps": counter.segments}, handle)
    return code


if __name__ == "__main__":
    sys.exit(main())

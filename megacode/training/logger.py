"""Console and TensorBoard logging from global rank 0."""

from __future__ import annotations

import logging
import sys
from typing import Optional

log = logging.getLogger("megacode")


def setup_console(rank: int) -> None:
    """INFO on rank 0, warnings only elsewhere: 4 ranks do not print 4 copies."""
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[%(asctime)s rank{rank}] %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
        force=True,
    )
    # Megatron-Core logs its bucket and optimizer set-up at INFO on every build: keep warnings.
    logging.getLogger("megatron").setLevel(logging.WARNING)


class MetricsLogger:
    def __init__(self, tensorboard_dir: Optional[str], enabled: bool):
        self.enabled = enabled
        self.writer = None
        if enabled and tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=tensorboard_dir)
            log.info("TensorBoard logs: %s (tensorboard --logdir %s)", tensorboard_dir, tensorboard_dir)

    def step(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        if not self.enabled:
            return
        parts = []
        for key, value in values.items():
            if value is None:
                continue
            parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
            if self.writer is not None:
                self.writer.add_scalar(f"{prefix}/{key}", value, step)
        log.info("%s step %d | %s", prefix, step, " | ".join(parts))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()

"""Progress of a preprocessing run: a tqdm bar over input bytes with docs/s, MB/s and tokens/s.

When stderr is not a terminal (SLURM logs), a plain line is also printed every `log_interval`
documents, like Megatron-LM's preprocess_data.py.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total_bytes: int, enabled: bool = True, log_interval: int = 1000, start=None) -> None:
        self.enabled = enabled
        self.log_interval = log_interval
        self.start = time.perf_counter() if start is None else start  # rates count from the run's start
        self.docs = self.text_bytes = self.tokens = 0
        self._next_log = log_interval
        self._tty = sys.stderr.isatty()
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="preprocess",
                            dynamic_ncols=True, mininterval=0.5)

    def rates(self):
        s = max(time.perf_counter() - self.start, 1e-9)
        return self.docs / s, self.text_bytes / s / 1e6, self.tokens / s

    def update(self, disk_bytes: int, docs: int, text_bytes: int, tokens: int) -> None:
        self.docs += docs
        self.text_bytes += text_bytes
        self.tokens += tokens
        if not self.enabled:
            return
        docs_s, mb_s, tok_s = self.rates()
        self.bar.set_postfix_str(f"{docs_s:,.0f} docs/s, {mb_s:.1f} MB/s, {tok_s / 1e6:.2f}M tok/s", refresh=False)
        self.bar.update(disk_bytes)
        if not self._tty and self.docs >= self._next_log:
            print(f"processed {self.docs:,} documents ({docs_s:,.0f} docs/s, {mb_s:.2f} MB/s, "
                  f"{tok_s:,.0f} tokens/s)", file=sys.stderr)
            self._next_log = (self.docs // self.log_interval + 1) * self.log_interval

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

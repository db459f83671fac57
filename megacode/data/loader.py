"""Micro-batches for the training loop: samples by global index, collated by NVIDIA DALI (or plain
Python), prepared one step ahead in the background.

    loop: loader.get(consumed) ─────────────> [micro-batch dicts, `[b, s]` tensors on the device]
              │ hands over the step prepared ahead (or prepares it now), then schedules
              │ next_position(consumed) on the producer thread:
              ├─ sample ids of this DP rank: consumed + m·(mbs·dp) + dp_rank·mbs + [0, mbs)
              ├─ read: `dataset.read_batch(ids)` on `num_workers` threads, each a contiguous
              │        share of the step: one C++ gather per call (packed, blended, FIM data;
              │        GIL released), else dataset[i] per sample (dialog data); ids checked
              │        against the vocabulary
              └─ collate: DALI pipeline (external source → tokens[:-1], tokens[1:], mask[1:];
                          outputs on the GPU under CUDA) or numpy/torch (`batches.collate`)

Batches depend on (dataset, consumed, layout, dp_rank) alone, never on what the loader did
before, so a run resumed at a checkpoint's consumed-samples count, or re-sharded to another DP
size, reads exactly the samples an uninterrupted run would. The two collate paths and every
worker count give bit-identical batches (tests/data/test_loader.py). DALI is optional
(`pip install .[data-gpu]`, the `nvidia-dali-cuda120` wheel) and imported only when used.
"""

from __future__ import annotations

import logging
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional

import numpy as np
import torch

from megacode.data.provenance import check_token_range
from megacode.data.batching import batch_arrays, collate, position_ids, sample_indices

log = logging.getLogger("megacode")

BACKENDS = ("auto", "dali", "python")
_DALI_IMPORT_ERROR: Optional[str] = None


def dali_available() -> bool:
    """Whether NVIDIA DALI imports here (the import is tried once)."""
    global _DALI_IMPORT_ERROR
    if _DALI_IMPORT_ERROR is None:
        try:
            import nvidia.dali  # noqa: F401
            import nvidia.dali.plugin.pytorch  # noqa: F401
            _DALI_IMPORT_ERROR = ""
        except Exception as e:  # ImportError, or a broken CUDA runtime under the wheel
            _DALI_IMPORT_ERROR = f"{type(e).__name__}: {e}"
    return _DALI_IMPORT_ERROR == ""


def resolve_backend(name: str) -> str:
    """"dali" or "python" for `data.loader` = auto | dali | python."""
    if name not in BACKENDS:
        raise ValueError(f"data.loader must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "python":
        return "python"
    if dali_available():
        return "dali"
    if name == "dali":
        raise ImportError(f"data.loader=dali needs NVIDIA DALI ({_DALI_IMPORT_ERROR}); install it with "
                          f"`pip install .[data-gpu]` (nvidia-dali-cuda120) or set data.loader=python")
    return "python"


class PythonCollator:
    """numpy/torch collate (`batches.collate`), then a pinned, non-blocking copy to the device."""

    name = "python"

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, samples: list, stream=None) -> dict:
        batch = collate(samples)
        if self.device.type != "cuda":
            return batch
        return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}

    def close(self) -> None:
        pass


class DaliCollator:
    """A DALI pipeline fed by external source: `[b, s+1]` tokens and masks in, `[b, s]` batches out.

    CPU-only pipeline (device_id=None) on a CPU run; under CUDA the slices are taken on the
    host and the outputs moved to the GPU by DALI, then copied into torch tensors on `stream`.
    """

    name = "dali"

    def __init__(self, micro_batch_size: int, num_threads: int, device: torch.device) -> None:
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import Pipeline
        from nvidia.dali.plugin.pytorch import feed_ndarray

        self.device = device
        self._feed_ndarray = feed_ndarray
        self._torch_dtype = {types.INT64: torch.int64, types.FLOAT: torch.float32}
        on_gpu = device.type == "cuda"
        # Synchronous executor: the loader's producer thread is the prefetcher; DALI's own
        # `num_threads` run the operators over the samples of a batch.
        self.pipe = Pipeline(batch_size=micro_batch_size, num_threads=max(1, num_threads),
                             device_id=(device.index if device.index is not None else torch.cuda.current_device())
                             if on_gpu else None,
                             exec_async=False, exec_pipelined=False, prefetch_queue_depth=1)
        with self.pipe:
            tokens = fn.external_source(name="tokens", dtype=types.INT64, ndim=1, batch=True)  # [b][s+1]
            mask = fn.external_source(name="mask", dtype=types.FLOAT, ndim=1, batch=True)  # [b][s+1]
            outputs = [tokens[:-1], tokens[1:], mask[1:]]  # tokens, labels (shifted), loss mask [b][s]
            self.pipe.set_outputs(*[o.gpu() for o in outputs] if on_gpu else outputs)
        self.pipe.build()

    def __call__(self, samples, stream=None) -> dict:
        tokens, mask = batch_arrays(samples)  # [b, s+1] each: DALI takes the batch as one array
        self.pipe.feed_input("tokens", tokens)
        self.pipe.feed_input("mask", mask)
        outs = self.pipe.run(stream) if stream is not None else self.pipe.run()
        tokens, labels, mask = (self._to_torch(o, stream) for o in outs)
        return {"tokens": tokens, "labels": labels, "loss_mask": mask,
                "position_ids": position_ids(tokens.shape[0], tokens.shape[1], self.device)}

    def _to_torch(self, tensor_list, stream) -> torch.Tensor:
        # DALI reuses its output buffers on the next run: copy out, never alias.
        dense = tensor_list.as_tensor()
        out = torch.empty(tuple(dense.shape()), dtype=self._torch_dtype[dense.dtype], device=self.device)
        self._feed_ndarray(dense, out, cuda_stream=stream)
        return out

    def close(self) -> None:
        self.pipe = None


def _init_thread(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_device(device)  # the current device is per thread


def _shutdown(executors: list, collator) -> None:
    for executor in executors:
        executor.shutdown(wait=True, cancel_futures=True)
    collator.close()


class StepLoader:
    """The micro-batches of every optimizer step for one data-parallel rank.

    Args:
        dataset: map-style samples (`[s+1]` int64 arrays, or dicts with `tokens`/`loss_mask`).
        layout: gives micro_batch_size, dp, num_microbatches, global_batch_size.
        dp_rank: this rank's data-parallel index.
        device: where batches are delivered.
        num_workers: threads reading samples; 0 reads in the caller, synchronously, nothing ahead.
        backend: "auto" (DALI when importable), "dali" or "python".
        vocab_size: when set, a token id outside [0, vocab_size) raises TokenRangeError naming
            the dataset file, document and offset.
        next_position: consumed count of the step to prepare after handing over the one at
            `consumed`; default consumed + global batch (None = nothing to prepare).
        name: for messages ("train", "valid").
    """

    def __init__(self, dataset, layout, dp_rank: int = 0, device: Optional[torch.device] = None, *,
                 num_workers: int = 2, backend: str = "auto", vocab_size: Optional[int] = None,
                 next_position: Optional[Callable[[int], Optional[int]]] = None, name: str = "train") -> None:
        self.dataset = dataset
        self.layout = layout
        self.dp_rank = int(dp_rank)
        self.device = device or torch.device("cpu")
        self.num_workers = int(num_workers)
        self.vocab_size = vocab_size
        self.name = name
        self.next_position = next_position or self._next_step
        self.backend = resolve_backend(backend)
        mbs = layout.micro_batch_size
        self.collator = (DaliCollator(mbs, self.num_workers, self.device) if self.backend == "dali"
                         else PythonCollator(self.device))
        self.stats = {"steps": 0, "prefetched": 0, "wait_s": 0.0}
        self._pending = None  # (consumed, future) of the step being prepared ahead
        self._stream = None
        executors = []
        self._producer = self._readers = None
        if self.num_workers > 0:
            self._producer = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-loader",
                                                initializer=_init_thread, initargs=(self.device,))
            executors.append(self._producer)
            if self.device.type == "cuda":
                self._stream = torch.cuda.Stream(self.device)
        if self.num_workers > 1:
            self._readers = ThreadPoolExecutor(self.num_workers, thread_name_prefix=f"{name}-reader")
            executors.append(self._readers)
        self._finalizer = weakref.finalize(self, _shutdown, executors, self.collator)

    # The dataset's own interface, so the loader can stand where a dataset stood.
    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[i]

    def _next_step(self, consumed: int) -> Optional[int]:
        nxt = consumed + self.layout.global_batch_size
        return nxt if nxt + self.layout.global_batch_size <= len(self.dataset) else None

    def step_indices(self, consumed: int) -> List[range]:
        """Global sample ids of each micro-batch of the step that starts after `consumed` samples."""
        return [sample_indices(consumed, m, self.layout, self.dp_rank) for m in range(self.layout.num_microbatches)]

    def _read_one(self, i: int):
        sample = self.dataset[i]
        if self.vocab_size is not None:
            check_token_range(sample, self.vocab_size, self.dataset, i)
        return sample

    @property
    def _batched(self) -> bool:
        """Whether the dataset's `read_batch` serves it (asked each time: the dataset may be swapped)."""
        return bool(getattr(self.dataset, "can_read_batch", False))

    def _read_many(self, ids: List[int]):
        """Samples `ids`: one `[n, s+1]` array from the dataset's `read_batch` (packed, blended and
        FIM data: C++ with the GIL released), else a list of samples (dialog data)."""
        if not self._batched:
            return [self._read_one(i) for i in ids]
        rows = self.dataset.read_batch(ids)
        if self.vocab_size is not None and rows.size and (rows.min() < 0 or rows.max() >= self.vocab_size):
            bad = int(np.flatnonzero(((rows < 0) | (rows >= self.vocab_size)).any(axis=1))[0])
            check_token_range(rows[bad], self.vocab_size, self.dataset, ids[bad])  # raises, naming the file
        return rows

    def _read(self, ids: List[int]):
        if self._readers is None:
            return self._read_many(ids)
        # Contiguous chunks, one per worker: one task per thread, not per sample; order kept.
        n = self.num_workers
        chunks = [ids[k * len(ids) // n:(k + 1) * len(ids) // n] for k in range(n)]
        parts = list(self._readers.map(self._read_many, chunks))
        if self._batched:
            return np.concatenate(parts)
        return [sample for part in parts for sample in part]

    def _prepare(self, consumed: int) -> tuple:
        """(micro-batches, CUDA event or None) of the step at `consumed`; runs on the producer thread."""
        ranges = self.step_indices(consumed)
        samples = self._read([i for r in ranges for i in r])
        mbs = self.layout.micro_batch_size
        if self._stream is None:
            return [self.collator(samples[m * mbs:(m + 1) * mbs]) for m in range(len(ranges))], None
        with torch.cuda.stream(self._stream):
            batches = [self.collator(samples[m * mbs:(m + 1) * mbs], self._stream) for m in range(len(ranges))]
            event = torch.cuda.Event()
            event.record(self._stream)
        return batches, event

    def get(self, consumed: int) -> List[dict]:
        """The micro-batches of the step that starts after `consumed` samples (any position, any order)."""
        start = time.perf_counter()
        if self._producer is None:
            batches, _ = self._prepare(consumed)
        else:
            pending, self._pending = self._pending, None
            if pending is not None and pending[0] == consumed:
                batches, event = pending[1].result()
                self.stats["prefetched"] += 1
            else:  # first step, or a jump (resume, evaluation elsewhere): prepare it now
                if pending is not None:
                    pending[1].cancel()
                batches, event = self._producer.submit(self._prepare, consumed).result()
            nxt = self.next_position(consumed)
            if nxt is not None:
                self._pending = (nxt, self._producer.submit(self._prepare, nxt))
            if event is not None:  # batches were made on the loader's stream
                current = torch.cuda.current_stream(self.device)
                current.wait_event(event)
                for batch in batches:
                    for tensor in batch.values():
                        tensor.record_stream(current)
        self.stats["steps"] += 1
        self.stats["wait_s"] += time.perf_counter() - start
        return batches

    def close(self) -> None:
        self._pending = None
        self._finalizer()

    def __repr__(self) -> str:
        return (f"StepLoader({self.name}, backend={self.backend}, workers={self.num_workers}, "
                f"dp_rank={self.dp_rank}, device={self.device}, dataset={self.dataset!r})")

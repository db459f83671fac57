"""Chunks -> N worker threads -> results in chunk order.

    main thread                                   N worker threads (--workers N)
      chunk iterator --submit--> executor queue --> ChunkProcessor: read, scan JSON, encode
      results in chunk order <-- futures        <--   (C++, GIL released: csrc/jsonl_scan.h,
      (at most `window` chunks in flight)              csrc/tokenize.cpp)

Threads, not processes: a JSONL chunk is one C++ call that reads no Python object and holds no
GIL (scan, unescape, encode), so threads scale like processes without forking, pickling token
arrays back through pipes, or loading the tokenizer once per process; every thread's word cache
lives in the one encoder. The Python left per chunk (the odd lines Python's json judges, source
files' reading and metadata, numpy bookkeeping) is small. With a model outside the C++ core's
scope the SentencePiece binding encodes under the GIL for parsing, and threads scale less
(DESIGN.md §4b).

A free thread takes the next queued chunk, so threads finish within about one chunk of each
other. Results leave in chunk order, so the output is the same for every N, and at most `window`
chunks are in flight, so memory stays bounded. An exception in a chunk leaves `ordered_results`
unchanged (with the traceback of the thread); queued chunks are cancelled and running ones
finish before it does.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Deque, Iterable, Iterator

from megacode.data.preprocess.sources import Chunk
from megacode.data.preprocess.worker import ChunkResult


def ordered_results(chunks: Iterable[Chunk], process: Callable[[Chunk], ChunkResult],
                    workers: int) -> Iterator[ChunkResult]:
    """Yield process(chunk) for every chunk, in chunk order, computed by `workers` threads
    (workers == 1: here, in this thread)."""
    if workers == 1:
        for chunk in chunks:
            yield process(chunk)
        return
    window = 2 * workers + 2  # every thread busy, one queued each, and the next in order
    pending: Deque[Future] = deque()
    executor = ThreadPoolExecutor(workers, thread_name_prefix="megacode-preprocess")
    try:
        for chunk in chunks:
            pending.append(executor.submit(process, chunk))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


__all__ = ["ordered_results"]

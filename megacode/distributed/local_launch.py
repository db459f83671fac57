"""Launching torchrun on this machine from Python (tests, benchmarks, the experiments harness).

    port = free_port()                      # for --master-port
    with killed_after(subprocess.Popen(..., start_new_session=True)) as proc:
        proc.wait()

`killed_after` kills the child's whole process group when the block ends, however it ends: a
writer process of dist_checkpointing (or a rank torchrun left behind) must not outlive the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from typing import Iterator


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def killed_after(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Yield `proc` (started with `start_new_session=True`); afterwards SIGKILL its process group
    and reap it."""
    try:
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

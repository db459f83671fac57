"""A small launcher for fault tests: torch and Megatron-Core are imported once, then every attempt's
ranks are fork()ed from this process — real processes that run `megacode.train.main` (or a test
function), exit with real codes and can be signalled or SIGKILLed — without paying the ~5 s
import of a fresh interpreter per rank per attempt (the cost that makes 20 torchrun launches too
slow for CI). Like torchrun's agent, it provides each attempt's rendezvous TCPStore
(`TORCHELASTIC_USE_AGENT_STORE`: it outlives any rank), starts each rank in its own session (so
`killpg` reaches a rank and its helpers, as torchrun's shutdown and SLURM do) and numbers
attempts with `TORCHELASTIC_RESTART_COUNT`. It reads the ranks' heartbeats from that store and
their logs as they are written, so a test can strike while a rank is in a chosen phase.

This process never runs a thread of its own while it forks (a thread holding a lock at fork
time can deadlock the child): the store server lives in a forked keeper process, one per
attempt, and everything else here is single-threaded polling.

Only this file's top level runs in spawned helper processes (they import `__main__`): keep it light.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[2]


def preload() -> None:
    """Import what every rank needs, once, before any fork."""
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import warnings

    warnings.filterwarnings("ignore")
    import megacode.train  # noqa: F401
    import megacode.training.trainer  # noqa: F401


class Attempt:
    """The ranks of one attempt: pids, logs, exit codes, and the heartbeats in the store."""

    def __init__(self, launcher: "ForkLauncher", number: int, keeper: tuple, pids: dict[int, int],
                 logs: dict[int, Path]):
        self.launcher, self.number, self.pids, self.logs = launcher, number, pids, logs
        self.port, self._keeper_pid, self._keeper_fd = keeper
        self._store = None
        self.codes: dict[int, int] = {}

    def heartbeat(self, rank: int) -> Optional[dict]:
        import datetime

        import torch.distributed as dist

        if self._store is None:  # a client only: no server thread in this process
            self._store = dist.TCPStore("127.0.0.1", self.port, is_master=False, wait_for_workers=False,
                                        timeout=datetime.timedelta(seconds=30))
        key = f"megacode/watchdog/{self.launcher.run_id}/{self.number}/hb/{rank}"
        if not self._store.check([key]):
            return None
        return json.loads(self._store.get(key).decode())

    def wait_log(self, rank: int, pattern: str, start: int = 0, timeout: float = 120.0) -> tuple[re.Match, int]:
        """The first match of `pattern` in `rank`'s log at or after offset `start`, and the offset after it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.logs[rank].read_text(errors="replace")
            match = regex.search(text, start)
            if match:
                return match, match.end()
            if len(self.poll()) == len(self.pids):
                raise RuntimeError(f"attempt {self.number} ended before {pattern!r} in rank {rank}'s log: {self.codes}")
            time.sleep(0.003)
        raise TimeoutError(f"no {pattern!r} in rank {rank}'s log within {timeout} s")

    def wait_phase(self, rank: int, phases: tuple, min_step: int = 0, timeout: float = 120.0) -> dict:
        """Poll `rank`'s heartbeat until it reports one of `phases` at step >= min_step."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            info = self.heartbeat(rank)
            if info and info["phase"] in phases and info["step"] >= min_step:
                return info
            if len(self.codes) == len(self.pids):
                raise RuntimeError(f"attempt {self.number} ended before rank {rank} reached {phases}: {self.codes}")
            time.sleep(0.01)
        raise TimeoutError(f"rank {rank} never reported {phases} at step >= {min_step} in {timeout} s")

    def signal(self, rank: int, sig: int, group: bool = False) -> None:
        pid = self.pids[rank]
        if rank in self.codes:
            return
        try:
            (os.killpg if group else os.kill)(pid, sig)
        except ProcessLookupError:
            pass

    def poll(self) -> dict[int, int]:
        for rank, pid in self.pids.items():
            if rank in self.codes:
                continue
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self.codes[rank] = os.waitstatus_to_exitcode(status)
        return self.codes

    def wait(self, timeout: float) -> dict[int, int]:
        """Exit codes (negative: killed by that signal); ranks still alive at the deadline are
        SIGKILLed and reported as None."""
        deadline = time.monotonic() + timeout
        while len(self.poll()) < len(self.pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        for rank in self.pids:
            if rank not in self.codes:
                self.kill_group(rank)
                os.waitpid(self.pids[rank], 0)
                self.codes[rank] = None
        self.reap_helpers()
        self.close_store()
        return dict(sorted(self.codes.items()))

    def close_store(self) -> None:
        if self._keeper_fd is not None:
            self._store = None
            os.close(self._keeper_fd)  # the keeper exits when its pipe closes
            os.waitpid(self._keeper_pid, 0)
            self._keeper_fd = None

    def kill_group(self, rank: int) -> None:
        try:
            os.killpg(self.pids[rank], signal.SIGKILL)
        except ProcessLookupError:
            pass

    def reap_helpers(self) -> None:
        """Helpers (checkpoint writer processes) that outlived their rank: ours, by process group."""
        for pid in self.pids.values():
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def log(self, rank: int) -> str:
        return self.logs[rank].read_text(errors="replace")


class ForkLauncher:
    def __init__(self, workdir: Path, nproc: int, run_id: str = "faults"):
        self.workdir, self.nproc, self.run_id = Path(workdir), nproc, run_id
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.attempts = 0

    def start(self, argv: list[str], env: Optional[dict] = None, target: Optional[Callable] = None,
              nproc: Optional[int] = None, name: str = "") -> Attempt:
        """Fork the ranks of the next attempt; `target(argv) -> exit code` (default megacode.train.main)."""
        nproc = nproc or self.nproc
        number = self.attempts
        self.attempts += 1
        keeper = _start_keeper()
        base = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(keeper[0]), "WORLD_SIZE": str(nproc),
                "LOCAL_WORLD_SIZE": str(nproc), "TORCHELASTIC_USE_AGENT_STORE": "True",
                "TORCHELASTIC_RUN_ID": self.run_id, "TORCHELASTIC_RESTART_COUNT": str(number),
                "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
        pids, logs = {}, {}
        for rank in range(nproc):
            logs[rank] = self.workdir / f"attempt{number:02d}{name}_rank{rank}.log"
            logs[rank].write_text("")  # exists before the child runs: readers may look at once
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(rank, base, argv, logs[rank], target)  # never returns
            pids[rank] = pid
        return Attempt(self, number, keeper, pids, logs)


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _start_keeper() -> tuple[int, int, int]:
    """Fork a process that hosts a rendezvous TCPStore until our end of its pipe closes:
    (port, pid, that pipe's write end)."""
    port_r, port_w = os.pipe()
    life_r, life_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            import datetime

            import torch.distributed as dist

            os.close(life_w)
            _die_with_parent()
            store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                                  timeout=datetime.timedelta(seconds=60))
            os.write(port_w, f"{store.port}\n".encode())
            os.read(life_r, 1)  # blocks until the launcher closes its end (or dies)
        finally:
            os._exit(0)
    os.close(port_w)
    os.close(life_r)
    port = int(os.read(port_r, 64).decode())
    os.close(port_r)
    return port, pid, life_w


def _child(rank: int, env: dict, argv: list[str], log: Path, target: Optional[Callable]) -> None:
    code = 1
    try:
        os.setsid()  # own session and process group, as torchrun starts its workers
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        os.environ.update(env)
        os.environ["RANK"] = os.environ["LOCAL_RANK"] = str(rank)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if target is None:
            from megacode.train import main as target
        code = int(target(argv) or 0)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - report, then exit like a crashed worker
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)

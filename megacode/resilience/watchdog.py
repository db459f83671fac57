"""Dead or hung ranks: heartbeats in the rendezvous store, checked by a thread on every rank.

On every phase change (at most ten times per `fault.heartbeat_interval_s`) and at least once per
interval, each rank's watchdog thread publishes a heartbeat — a counter, its step, phase and time
in that phase, where its main thread is (innermost Python frame, and whether that frame is a
collective wait), host and pid — under `megacode/watchdog/<run>/<restart>/` in the store torchrun
(or rank 0) already hosts for the rendezvous. Once per interval it reads one peer, its ring
successor, so the store serves O(world) requests per interval at any scale. It stops the job when

- the successor's counter has not moved for `heartbeat_timeout_s` (dead, frozen, or host gone);
- its own phase has lasted `stall_timeout_s` (hung: this rank, or a peer it waits for);
- another rank published a verdict under the abort key;
- the store stops answering (the launcher, or rank 0 hosting the store, is gone).

It then reads every heartbeat once, explains who is at fault and what each was doing, publishes
that under the abort key (every other rank stops with the same message within one interval) and
calls `on_abort`. The main thread calls `diagnose` when a collective raised: a peer's socket
closed, so it waits (at most the heartbeat timeout) for evidence naming that peer.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time
from typing import Callable, Optional

from megacode.resilience.phase import DONE, FAILED, NO_STALL_CHECK, PhaseTracker

# Text of errors a rank sees when a peer, not itself, broke (closed sockets, timeouts).
COMMUNICATION_ERRORS = ("connection closed", "connection reset", "broken pipe", "timed out", "timeout",
                        "gloo", "nccl", "socket", "peer")


def is_communication_error(err: BaseException) -> bool:
    import torch.distributed as dist

    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = f"{type(err).__name__}: {err}".lower()
    return any(marker in text for marker in COMMUNICATION_ERRORS)


def _pid_dead(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Watchdog:
    def __init__(self, tracker: PhaseTracker, rank: int, world: int, interval_s: float, timeout_s: float,
                 stall_timeout_s: float, on_abort: Callable[[str, bool], None], store=None):
        import torch.distributed as dist

        self.tracker, self.rank, self.world = tracker, rank, world
        self.interval, self.timeout, self.stall_timeout = interval_s, timeout_s, stall_timeout_s
        self.on_abort = on_abort
        self.host = socket.gethostname()
        master, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "29500"))
        self.address = f"{master}:{port}"
        self.store = store if store is not None else dist.TCPStore(
            master, port, is_master=False, wait_for_workers=False,
            timeout=datetime.timedelta(seconds=max(30.0, timeout_s)))
        run = f"{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        self.prefix = f"megacode/watchdog/{run}/"
        self._seq = 0
        self._extra: dict = {}
        self._seen: dict[int, tuple[int, float]] = {}  # peer -> (counter, monotonic time it last moved)
        self._lock = threading.Lock()  # the store client is shared by the watchdog and main threads
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="megacode-watchdog", daemon=True)

    # ---- store access ----------------------------------------------------------------------
    def _key(self, rank: int) -> str:
        return f"{self.prefix}hb/{rank}"

    def _get(self, key: str) -> Optional[str]:
        with self._lock:
            if not self.store.check([key]):  # get() on a missing key would block until the timeout
                return None
            return self.store.get(key).decode()

    def _set(self, key: str, value: str) -> None:
        with self._lock:
            self.store.set(key, value)

    def beat(self) -> None:
        step, phase, age = self.tracker.now()
        where, waiting = self.tracker.where()
        self._seq += 1
        self._set(self._key(self.rank), json.dumps({
            "seq": self._seq, "step": step, "phase": phase, "age": round(age, 1), "where": where,
            "waiting": waiting, "host": self.host, "pid": os.getpid(), "time": time.time(), **self._extra}))

    def read(self, rank: int) -> Optional[dict]:
        text = self._get(self._key(rank))
        return json.loads(text) if text else None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        """End of this process. After a normal end peers stop watching this rank (phase done);
        after a failure its last heartbeat keeps saying `failed` and why, for the peers' verdict."""
        self._stop.set()
        self.tracker.changed.set()
        self._thread.join(timeout=5 * self.interval + 5)
        try:
            step, phase, _ = self.tracker.now()
            if phase != FAILED:
                self.tracker.set(DONE, step)
            self.beat()
        except Exception:  # the store may already be gone at shutdown; nothing left to protect
            pass

    def publish_failure(self, error: BaseException) -> None:
        """This rank failed on its own (not a peer's broken connection): say so right away."""
        self._extra = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
        self.beat()

    def _run(self) -> None:
        # A phase change is published at once (at most every interval/10, to spare the store), so
        # a verdict names the step and phase a rank died in, not the one an interval before.
        last_check = time.monotonic()
        while not self._stop.is_set():
            self.tracker.changed.wait(max(0.0, self.interval - (time.monotonic() - last_check)))
            self.tracker.changed.clear()
            if self._stop.is_set():
                return
            try:
                self.beat()
                if time.monotonic() - last_check < self.interval:
                    time.sleep(self.interval / 10)
                    continue
                last_check = time.monotonic()
                verdict = self._check()
            except Exception as err:  # noqa: BLE001 - any store failure means the job is broken
                if self._stop.is_set():
                    return
                verdict = (f"rank {self.rank}: the rendezvous store {self.address} stopped answering "
                           f"({type(err).__name__}: {err}): the launcher or the rank hosting it is gone")
                self.on_abort(verdict, True)
                return
            if verdict is not None and not self._stop.is_set():
                self.on_abort(*verdict)
                return

    # ---- checks ----------------------------------------------------------------------------
    def _stale(self, rank: int, info: Optional[dict]) -> bool:
        """No new heartbeat counter from `rank` for the timeout (first sighting starts the clock)."""
        if info is not None and info.get("phase") == DONE:
            return False
        seq = info["seq"] if info else -1
        now = time.monotonic()
        seen = self._seen.get(rank)
        if seen is None or seen[0] != seq:
            self._seen[rank] = (seq, now)
            return False
        return now - seen[1] > self.timeout

    def _check(self) -> Optional[tuple[str, bool]]:
        published = self._get(f"{self.prefix}abort")
        if published:
            return published, False
        successor = (self.rank + 1) % self.world
        if self._stale(successor, self.read(successor)):
            return self._verdict(), True
        step, phase, age = self.tracker.now()
        if phase not in NO_STALL_CHECK and age > self.stall_timeout:
            return self._verdict(stalled=True), True
        return None

    def _verdict(self, stalled: bool = False) -> str:
        infos = {r: self.read(r) for r in range(self.world)}
        text = explain(infos, self._stale_set(infos), self.timeout, stalled)
        message = f"rank {self.rank} stops the job: {text}"
        self._set(f"{self.prefix}abort", message)
        return message

    def _stale_set(self, infos: dict) -> dict[int, str]:
        """Peers at fault -> "gone" (its process on this host has exited) or "silent"."""
        now = time.time()
        stale = {}
        for rank, info in infos.items():
            if rank == self.rank or (info is not None and info["phase"] == DONE):
                continue
            if info is not None and info["host"] == self.host and _pid_dead(info["pid"]):
                stale[rank] = "gone"
            elif (rank in self._seen and self._stale(rank, info)) or info is None \
                    or now - info["time"] > self.timeout:  # other hosts' clocks: NTP-close
                stale[rank] = "silent"
        return stale

    def diagnose(self, error: BaseException, wait_s: Optional[float] = None) -> Optional[str]:
        """Main thread, after a collective raised: publish this failure, then wait for a peer that
        is dead, frozen or failed on its own. The verdict (also published), or None."""
        self.publish_failure(error)
        deadline = time.monotonic() + (wait_s if wait_s is not None else self.timeout + 2 * self.interval)
        while True:
            published = self._get(f"{self.prefix}abort")
            if published:
                return published
            infos = {r: self.read(r) for r in range(self.world)}
            for rank, info in infos.items():
                if rank != self.rank:
                    self._stale(rank, info)  # start or advance every peer's clock
            stale = self._stale_set(infos)
            failed = [r for r, info in infos.items() if r != self.rank and info and info["phase"] == FAILED
                      and not _names_communication(info.get("error", ""))]
            if stale or failed:
                message = f"rank {self.rank} stops the job: {explain(infos, stale, self.timeout)}"
                self._set(f"{self.prefix}abort", message)
                return message
            if time.monotonic() >= deadline:
                return None
            time.sleep(self.interval)


def _names_communication(error_text: str) -> bool:
    return any(marker in error_text.lower() for marker in COMMUNICATION_ERRORS)


def _doing(info: dict) -> str:
    text = f"step {info['step']} in {info['phase']} ({info['age']:.0f} s), at {info['where']}"
    return text + (f"; its error: {info['error']}" if info.get("error") else "")


def explain(infos: dict[int, Optional[dict]], stale: dict[int, str], timeout: float, stalled: bool = False) -> str:
    """Who is at fault and what they were doing, from every rank's last heartbeat."""
    parts = []
    now = time.time()
    for rank, kind in sorted(stale.items()):
        info = infos.get(rank)
        if info is None:
            parts.append(f"rank {rank} never sent a heartbeat")
            continue
        where = f"rank {rank} (host {info['host']}, pid {info['pid']})"
        if kind == "gone":
            parts.append(f"{where} died: its process is gone; it was at {_doing(info)}")
        else:
            parts.append(f"{where} is dead or frozen: no heartbeat for {now - info['time']:.1f} s "
                         f"(limit {timeout:g} s); it was at {_doing(info)}")
    for rank, info in sorted(infos.items()):
        if info and info["phase"] == FAILED and rank not in stale and not _names_communication(info.get("error", "")):
            parts.append(f"rank {rank} failed at step {info['step']}: {info.get('error')}")
    if not parts and stalled:
        live = {r: i for r, i in infos.items() if i is not None and i["phase"] != DONE}
        waiting = sorted(r for r, i in live.items() if i["waiting"])
        busy = sorted(r for r, i in live.items() if not i["waiting"])
        if busy and waiting:
            for rank in busy:
                parts.append(f"rank {rank} is hung at {_doing(live[rank])}, while rank(s) "
                             f"{_ranks(waiting)} wait for it in a collective")
        else:
            parts.append("every rank is stalled: " + "; ".join(f"rank {r} at {_doing(i)}" for r, i in
                                                                 sorted(live.items())[:16]))
    if not parts:
        parts.append("a peer closed its connection (no heartbeat evidence yet)")
    return "; ".join(parts)


def _ranks(ranks: list[int]) -> str:
    return ",".join(str(r) for r in ranks[:16]) + (f" (+{len(ranks) - 16} more)" if len(ranks) > 16 else "")

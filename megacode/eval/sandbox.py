"""Runs untrusted Python (model-written solutions and their tests), one fresh process per run.

Command mode (a job with `steps`, used for compiled and other languages; the runner is
`sandbox_steps.py`): the job's files are written into the run's working directory and each
step (compile, run) is exec'd there as the program, under the same containment below; see
megacode.eval.languages. Without namespaces the Python audit hook is the only network barrier,
and it does not reach exec'd programs.

Containment, outermost first (`sandbox_child.py` does the in-process half):
- a uid no account uses (from uid_base up, each held by one run at a time across threads and
  processes through a lock file) when the host is root, so root's file rights and
  root's exemption from RLIMIT_NPROC never reach the program (a fork bomb as root is unlimited);
- new user, network, mount, pid, IPC and UTS namespaces where the kernel allows unprivileged
  ones: no network interface but a downed loopback, a private size-capped tmpfs as the working
  directory and over every world-writable directory, its own pid 1 whose death kills all
  processes of the run, no capabilities left when the program starts;
- rlimits on address space, CPU time, file size, open files and processes; a wall-clock deadline
  at which the host kills the whole process group; a scrubbed environment; stdout and stderr
  written to host files capped by the file-size limit, of which the tail is kept;
- a completion report on a private pipe, keyed by a per-run nonce, so only a test that ran to its
  end counts as passed (sys.exit(0) or os._exit(0) before the asserts fail).
Where namespaces are refused the sandbox says so once (logged, and in `isolation.describe()`)
and falls back to the uid, rlimits, a subreaper that kills the uid's leftovers, and an audit hook
that refuses network calls from Python (C-level sockets are then not blocked).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from tqdm import tqdm

from megacode.eval.sandbox_config import SandboxConfig, SandboxError, SandboxJob, SandboxResult

log = logging.getLogger(__name__)

_CHILD_SOURCE = (Path(__file__).with_name("sandbox_child.py")).read_text()
_STEPS_SOURCE = (Path(__file__).with_name("sandbox_steps.py")).read_text()
_EXIT_SETUP = 121
_WORKDIR_NS = "/tmp/work"
_REPORT_CAP = 64 * 1024
_KILL_GRACE_S = 5.0
_UID_RANGE = 1024
# Imports a pure-Python stdlib module, so the program's uid must be able to read the stdlib.
_PROBE = "import sys, textwrap\nassert sys.version_info >= (3, 8) and textwrap.dedent(' x') == 'x'\n"


@dataclass(frozen=True)
class Isolation:
    """What this machine let the sandbox do, found by running a probe program once."""

    python: str
    dedicated_uid: bool
    namespaces: bool
    why_no_namespaces: str = ""
    notes: str = ""
    """Parts of the namespace isolation the kernel refused (older kernels, masked /proc)."""

    def describe(self) -> str:
        who = "an unprivileged uid of its own per run" if self.dedicated_uid else "the caller's own uid"
        if self.namespaces:
            where = ("user/net/mount/pid/ipc/uts namespaces: no network, private tmpfs working directory, "
                     "own pid 1")
        else:
            where = (f"NO namespaces ({self.why_no_namespaces}): network blocked only by a Python audit hook, "
                     "files guarded only by the uid's permissions")
        return f"sandbox: {self.python}, {who}, {where}" + (f"; BUT {self.notes}" if self.notes else "")


_ISOLATION_CACHE: dict = {}
_ISOLATION_LOCK = threading.Lock()


class Sandbox:
    """Runs `SandboxJob`s; thread-safe; `run_many` runs them `config.worker_count` at a time."""

    def __init__(self, config: Optional[SandboxConfig] = None):
        self.config = config or SandboxConfig()
        self._running = threading.BoundedSemaphore(self.config.worker_count)

    # ---- public API -------------------------------------------------------------------------
    @property
    def isolation(self) -> Isolation:
        key = (self.config.python, self.config.namespaces, self.config.uid_base, self.config.site_packages)
        with _ISOLATION_LOCK:
            if key not in _ISOLATION_CACHE:
                _ISOLATION_CACHE[key] = self._probe()
            return _ISOLATION_CACHE[key]

    def run(self, program: str, test: str = "", timeout_s: Optional[float] = None,
            run_name: str = "__main__") -> SandboxResult:
        return self.run_job(SandboxJob(program, test, timeout_s, run_name))

    def run_job(self, job: SandboxJob) -> SandboxResult:
        isolation = self.isolation
        with self._running:
            return self._execute(job, isolation)

    def run_many(self, jobs: Sequence[SandboxJob], desc: str = "sandbox", progress: bool = True) -> list[SandboxResult]:
        """Results in the order of `jobs`; a tqdm bar shows runs per second."""
        self.isolation  # probe once, before the threads start
        results: list[Optional[SandboxResult]] = [None] * len(jobs)
        with ThreadPoolExecutor(self.config.worker_count) as pool, \
                tqdm(total=len(jobs), desc=desc, unit="run", disable=not progress, leave=False) as bar:
            futures = {pool.submit(self.run_job, job): i for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
        return results  # type: ignore[return-value]

    # ---- one run ----------------------------------------------------------------------------
    def _execute(self, job: SandboxJob, iso: Isolation) -> SandboxResult:
        if not iso.dedicated_uid:
            return self._execute_as(job, None, iso)
        uid, lock = _acquire_uid(self.config.uid_base)
        try:
            return self._execute_as(job, uid, iso)
        finally:
            os.close(lock)  # releases the uid

    def _execute_as(self, job: SandboxJob, uid: Optional[int], iso: Isolation) -> SandboxResult:
        host_dir = None
        if iso.namespaces:
            workdir = _WORKDIR_NS
        else:
            host_dir = tempfile.mkdtemp(prefix="megacode-sandbox-")
            if uid is not None:
                os.chown(host_dir, uid, uid)
            workdir = host_dir
        try:
            return self._spawn(job, uid, workdir, iso)
        finally:
            if host_dir is not None:
                shutil.rmtree(host_dir, ignore_errors=True)

    def _spawn(self, job: SandboxJob, uid: Optional[int], workdir: str, iso: Isolation) -> SandboxResult:
        cfg = self.config
        timeout = job.timeout_s if job.timeout_s is not None else cfg.timeout_s
        nonce = secrets.token_hex(16)
        nproc = job.max_processes or cfg.max_processes
        # Command mode: per process, twice the longest step (compilers run several threads).
        cpu_limit = cfg.cpu_limit_s if not job.steps else int(2 * max(s.timeout_s for s in job.steps)) + 1
        read_fd, write_fd = os.pipe()
        spec = {
            "report_fd": write_fd, "namespaces": iso.namespaces, "workdir": workdir, "tmpfs_mb": cfg.tmpfs_mb,
            "memory_mb": job.memory_mb or cfg.memory_mb, "file_size_mb": cfg.file_size_mb,
            "max_open_files": cfg.max_open_files,
            "cpu_time_s": cpu_limit, "block_sockets": cfg.block_sockets, "run_name": job.run_name,
            # Counted per (user namespace, uid) with namespaces, where bootstrap and init count
            # too; else per uid, meaningful only for a uid reserved to this run (the root
            # supervisor does not count).
            "nproc": (nproc + 2 if iso.namespaces else nproc if uid is not None else None),
            # Without namespaces a root bootstrap stays root and drops only the program.
            "program_uid": uid if not iso.namespaces else None,
        }
        argv = [iso.python, "-I", "-B"] + ([] if cfg.site_packages else ["-S"])
        argv += ["-c", _CHILD_SOURCE, json.dumps(spec)]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
               "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        payload = {"program": job.program, "test": job.test, "nonce": nonce}
        if job.steps is not None:  # command mode: files written, then each step run (sandbox_child)
            payload["files"] = job.files or {}
            payload["steps"] = [dataclasses.asdict(step) for step in job.steps]
            payload["runner"] = _STEPS_SOURCE
        payload = json.dumps(payload).encode()
        start = time.monotonic()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env, cwd="/",
                    pass_fds=(write_fd,), start_new_session=True, **_credentials(uid if iso.namespaces else None))
            except BaseException:
                os.close(read_fd)
                raise
            finally:
                os.close(write_fd)
            try:
                # Only without namespaces and a uid of its own can a daemon outlive the run
                # while holding the pipe; there, the bootstrap's exit ends the run.
                lines, killed = self._talk(proc, payload, read_fd, nonce, timeout,
                                           until_exit=not iso.namespaces and uid is None)
            finally:
                os.close(read_fd)
            seconds = time.monotonic() - start
            if killed and not iso.namespaces and uid is not None:
                self._reap_uid(iso, uid)
            stdout, stderr = _tail(out, cfg.output_tail_bytes), _tail(err, cfg.output_tail_bytes)
        return _verdict(lines, killed, proc.returncode, stdout, stderr, seconds, timeout, cpu_limit)

    def _talk(self, proc: subprocess.Popen, payload: bytes, read_fd: int, nonce: str, timeout: float,
              until_exit: bool = False) -> tuple[dict, bool]:
        """Send the payload, then read reports until every process of the run has let go of the
        pipe (EOF), or with `until_exit` the bootstrap has exited after reporting, or the deadline
        passes. Returns {word: detail} and whether we killed it."""
        try:
            proc.stdin.write(payload)
        except BrokenPipeError:
            pass  # it died before reading; its stderr says why
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        lines: dict = {}
        buffer = b""
        deadline = time.monotonic() + self.config.startup_timeout_s
        killed = False
        stage = 0  # 0 running, 1 asked the bootstrap to stop it, 2 killed the process group
        while True:
            remaining = deadline - time.monotonic()
            if until_exit and "status" in lines:
                if proc.poll() is not None:
                    break
                remaining = min(remaining, 0.02)
            ready, _, _ = select.select([read_fd], [], [], max(remaining, 0))
            if not ready:
                if until_exit and "status" in lines and time.monotonic() < deadline:
                    continue
                if stage == 2:
                    log.warning("sandbox: processes of a killed run still hold its pipe after SIGKILL")
                    break
                if stage == 0:
                    # The bootstrap kills init (so the kernel kills the whole pid namespace) and
                    # reaps it. Reading on to EOF means every process of the run has exited, so
                    # a killed fork bomb is gone before the next run starts.
                    proc.send_signal(signal.SIGTERM)
                else:
                    _kill_group(proc)
                stage += 1
                killed = True
                deadline = time.monotonic() + _KILL_GRACE_S
                continue
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            buffer = (buffer + chunk)[-_REPORT_CAP:]
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                text = raw.decode("utf-8", "replace")
                at = text.find(nonce)  # junk the program wrote to the pipe is ignored
                if at >= 0:
                    word, _, detail = text[at + len(nonce) + 1:].partition(" ")
                    if word == "ready" and "ready" not in lines and not killed:
                        deadline = time.monotonic() + timeout  # the program's clock starts now
                    if word == "note" and "note" in lines:
                        lines["note"] += "; " + detail
                    if word == "step":
                        lines.setdefault("steps", []).append(_step_record(detail))
                    lines.setdefault(word, detail)
        proc.wait()
        return lines, killed

    def _reap_uid(self, iso: Isolation, uid: int) -> None:
        """Without a pid namespace, kill whatever the run left behind under its dedicated uid."""
        subprocess.run([iso.python, "-I", "-S", "-c", "import os, signal; os.kill(-1, signal.SIGKILL)"],
                       user=uid, group=uid, extra_groups=[], env={}, cwd="/", check=False)

    # ---- probing ----------------------------------------------------------------------------
    def _probe(self) -> Isolation:
        cfg = self.config
        dedicated = os.geteuid() == 0
        candidates = [cfg.python] if cfg.python else _python_candidates()
        modes = {"auto": [True, False], "require": [True], "off": [False]}[cfg.namespaces]
        errors = []
        for python in candidates:
            why_not = "disabled by sandbox.namespaces=off"
            for namespaces in modes:
                iso = Isolation(python, dedicated, namespaces, "" if namespaces else why_not)
                try:
                    result = self._execute(SandboxJob(_PROBE), iso)
                except (PermissionError, FileNotFoundError) as err:
                    errors.append(f"{python}: cannot execute ({err.strerror})")
                    break  # this interpreter is unusable whatever the mode
                except SandboxError as err:
                    errors.append(f"{python}: {err}")
                    why_not = str(err)
                    continue
                if result.passed:
                    iso = dataclasses.replace(iso, notes=result.notes)
                    (log.info if namespaces and not result.notes else log.warning)(iso.describe())
                    return iso
                errors.append(f"{python}: probe program {result.status}: {result.reason} {result.stderr_tail[-300:]}")
        raise SandboxError("no usable sandbox; tried: " + " | ".join(errors))


def _acquire_uid(base: int) -> tuple[int, int]:
    """The lowest uid from `base` that no other run holds, and the fd whose flock holds it. The
    lock files make the reservation hold across processes too: without namespaces, the sweep
    after a run kills every process of its uid, which must be this run's alone."""
    directory = Path(tempfile.gettempdir()) / "megacode-sandbox-uids"
    directory.mkdir(mode=0o700, exist_ok=True)
    for uid in range(base, base + _UID_RANGE):
        fd = os.open(directory / f"{uid}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return uid, fd
        except BlockingIOError:
            os.close(fd)
    raise SandboxError(f"all {_UID_RANGE} sandbox uids from {base} are in use ({directory})")


def _python_candidates() -> list[str]:
    names = [sys.executable, os.path.realpath(sys.executable), getattr(sys, "_base_executable", ""),
             "/usr/bin/python3"]
    return list(dict.fromkeys(n for n in names if n and os.path.exists(n)))


def _credentials(uid: Optional[int]) -> dict:
    return {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # bootstrap and init; init's death empties the pid namespace
    except ProcessLookupError:
        pass


def _tail(handle, size: int) -> str:
    handle.seek(0, os.SEEK_END)
    end = handle.tell()
    handle.seek(max(0, end - size))
    return handle.read().decode("utf-8", "replace")


def _step_record(detail: str) -> dict:
    try:
        record = json.loads(detail)
    except json.JSONDecodeError:
        record = None
    return record if isinstance(record, dict) else {"name": "?", "exit": None, "seconds": 0.0}


def _verdict(lines: dict, killed: bool, returncode: int, stdout: str, stderr: str, seconds: float,
             timeout: float, cpu_limit: int) -> SandboxResult:
    steps = lines.get("steps", [])

    def result(status: str, code: Optional[int], reason: str) -> SandboxResult:
        return SandboxResult(status, code, stdout, stderr, round(seconds, 4), reason, lines.get("note", ""), steps)

    if "ready" not in lines:
        if killed:
            raise SandboxError(f"sandbox set-up did not finish in time; stderr: {stderr[-500:]}")
        raise SandboxError(f"sandbox set-up failed (exit {returncode}): {stderr[-500:].strip()}")
    if killed:
        return result("timed_out", None, f"wall-clock limit of {timeout:g}s exceeded")
    if "status" not in lines:
        return result("crashed", None, f"the run's supervisor died (exit {returncode}) before the program ended")
    status = int(lines["status"])
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
        if sig == signal.SIGXCPU:
            return result("timed_out", -sig, f"CPU-time limit of {cpu_limit}s exceeded ({name})")
        return result("crashed", -sig, f"killed by {name}")
    code = os.WEXITSTATUS(status)
    if code == 0 and "passed" in lines:
        return result("passed", 0, "")
    if steps and steps[-1].get("timed_out"):
        return result("timed_out", code, lines.get("failed", "a step passed its time limit"))
    for word in ("tampered", "exited", "failed"):
        if word in lines:
            return result("failed", code, lines[word])
    if code == 0:
        return result("failed", 0, "exit status 0 before the tests completed (no completion report)")
    return result("failed", code, f"exit status {code} before the tests completed")

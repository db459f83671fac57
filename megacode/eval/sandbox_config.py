"""Typed settings, jobs and results of the execution sandbox (`megacode.eval.sandbox`)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Optional

from megacode.config.schema import ConfigError

STATUSES = ("passed", "failed", "timed_out", "crashed")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class SandboxConfig:
    """Limits and isolation of every sandboxed run; the defaults suit HumanEval/MBPP programs."""

    timeout_s: float = 10.0
    """Wall-clock limit of one run, counted from the end of the sandbox's own set-up."""
    cpu_time_s: Optional[float] = None
    """CPU-time limit (RLIMIT_CPU, whole seconds, rounded up); None = timeout_s + 1."""
    memory_mb: int = 512
    """Address-space limit per process (RLIMIT_AS). Python itself needs about 30 MB."""
    file_size_mb: int = 16
    """Largest file a run may write (RLIMIT_FSIZE); also caps the captured stdout and stderr."""
    max_open_files: int = 64
    """Open file descriptors per process (RLIMIT_NOFILE)."""
    max_processes: int = 8
    """Processes and threads the program may have, itself included (RLIMIT_NPROC, counted
    inside the run's own user namespace or for a uid reserved to the worker)."""
    tmpfs_mb: int = 64
    """Size of the private in-memory /tmp holding the working directory (namespace mode)."""
    output_tail_bytes: int = 4096
    """How much of the end of stdout and of stderr a result keeps."""
    workers: int = 0
    """Runs in parallel in `run_many`; 0 = one per CPU core."""
    python: Optional[str] = None
    """Interpreter for sandboxed programs; None = the first of this interpreter, its real path and
    /usr/bin/python3 that the sandbox uid can execute."""
    namespaces: str = "auto"
    """`auto`: use user/net/mount/pid namespaces when the kernel allows them, else fall back and
    say so; `require`: fail without them; `off`: never use them (weaker, for comparison)."""
    uid_base: int = 2_100_000_000
    """When the host runs as root, each run gets a uid/gid from uid_base up (1024 of them), held
    by that run alone: a uid no account uses, so root's exemption from RLIMIT_NPROC and root's
    file rights do not reach the program."""
    block_sockets: bool = True
    """Also refuse network calls from Python (`socket.connect`, `getaddrinfo`, ...) through an
    audit hook: a clear error inside the namespace, the only network barrier without it."""
    site_packages: bool = False
    """Let programs import the interpreter's site-packages (numpy, ...); off = stdlib only."""
    startup_timeout_s: float = 30.0
    """Longest the sandbox's own set-up may take before the run counts as a sandbox failure."""

    def __post_init__(self) -> None:
        for name in ("timeout_s", "startup_timeout_s"):
            value = getattr(self, name)
            _require(isinstance(value, (int, float)) and value > 0, f"sandbox.{name} must be > 0, got {value!r}")
        _require(self.cpu_time_s is None or self.cpu_time_s > 0,
                 f"sandbox.cpu_time_s must be None or > 0, got {self.cpu_time_s!r}")
        for name, low in (("memory_mb", 32), ("file_size_mb", 1), ("max_open_files", 8),
                          ("max_processes", 1), ("tmpfs_mb", 1), ("output_tail_bytes", 0), ("workers", 0)):
            value = getattr(self, name)
            _require(isinstance(value, int) and not isinstance(value, bool) and value >= low,
                     f"sandbox.{name} must be an integer >= {low}, got {value!r}")
        _require(self.namespaces in ("auto", "require", "off"),
                 f"sandbox.namespaces must be auto, require or off, got {self.namespaces!r}")
        _require(0 < self.uid_base < 2**31 - 1024, f"sandbox.uid_base must be in (0, 2**31 - 1024), got {self.uid_base}")

    @property
    def cpu_limit_s(self) -> int:
        return int(-(-(self.cpu_time_s if self.cpu_time_s is not None else self.timeout_s + 1) // 1))

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


@dataclass
class SandboxJob:
    """One program and the test that must run to completion after it, in one namespace."""

    program: str
    """Source run first (the solution, or a whole file)."""
    test: str = ""
    """Source run after the program in the same globals; empty = the program alone."""
    timeout_s: Optional[float] = None
    """Overrides SandboxConfig.timeout_s for this job."""
    run_name: str = "__main__"
    """`__name__` of the program's globals; evaluation uses another name so that a
    `if __name__ == "__main__":` block (often reading input()) does not run."""
    files: Optional[dict] = None
    """Command mode (other languages): file name -> text, written into the working directory;
    then `steps` run there instead of the Python program/test."""
    steps: Optional[list] = None
    """Command mode: `CommandStep`s run one after the other inside the sandbox (compile, run);
    the first that exits non-zero, is killed or passes its time limit ends the run as failed."""
    memory_mb: Optional[int] = None
    """Overrides SandboxConfig.memory_mb (RLIMIT_AS) for this job: JVM, mono and node reserve
    far more address space than they use (see megacode.eval.languages)."""
    max_processes: Optional[int] = None
    """Overrides SandboxConfig.max_processes: runtimes start helper threads, which RLIMIT_NPROC counts."""


@dataclass
class CommandStep:
    """One command of a command-mode job, run in the job's working directory."""

    name: str
    """compile or run (reported per step, and in the verdict)."""
    argv: list
    """Program and arguments; found on the sandbox's PATH."""
    timeout_s: float
    """This step's wall-clock limit, inside the job's own limit."""
    stdin: str = ""
    """Text fed to the command's standard input (APPS-style tests); empty = /dev/null."""
    env: Optional[dict] = None
    """Variables added to the scrubbed environment (e.g. MONO_TRACE_LISTENER)."""


@dataclass
class SandboxResult:
    """What one run did. `passed` means the harness saw the test finish, not just exit code 0."""

    status: str
    """passed, failed, timed_out or crashed."""
    exit_code: Optional[int]
    """The program's exit status, -N when signal N ended it, None when the sandbox killed it."""
    stdout_tail: str
    stderr_tail: str
    seconds: float
    """Wall time of the whole run, sandbox set-up included."""
    reason: str = ""
    """Why it did not pass, in words (exception, limit, signal)."""
    notes: str = ""
    """Isolation the kernel refused for this run (e.g. no read-only host tree); empty normally."""
    steps: list = field(default_factory=list)
    """Command mode: per step that ran, {"name", "exit" (code, -signal, or None if timed out),
    "seconds"}; the last one is the step that ended the run."""

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class SandboxError(RuntimeError):
    """The sandbox itself could not run (no usable interpreter, set-up refused by the kernel)."""

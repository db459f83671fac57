"""Command mode of the sandbox: files written, then compile/run steps exec'd, each timed.

Runs inside the sandboxed program process (after isolation, as the run's uid), like
`sandbox_child.py` with the standard library only: the host sends this file's source with the
job, and `sandbox_child` executes it and calls `run_steps`. Each step is a child in its own
process group with its own wall-clock limit; at its end (or its time-out) the group is killed,
so a background job of one step does not outlive it. Reports go through the child's `report`.
"""

import json
import os
import select
import signal
import time


def run_steps(payload, nonce, report, report_fd):
    """Command mode: write the files into the working directory, then run each step (compile,
    run) as a child in its own process group, with its own time limit. The program's output is
    the run's stdout and stderr. The exec'd programs never hold the nonce or the report pipe."""
    for name, text in payload.pop("files").items():
        if not name or "/" in name or name in (".", ".."):
            report(nonce, "failed", f"file name {name!r} is not a plain name")
            os._exit(1)
        with open(name, "w", encoding="utf-8") as handle:
            handle.write(text)
    for step in payload.pop("steps"):
        started = time.monotonic()
        code, timed_out = _run_step(step, report_fd)
        report(nonce, "step", json.dumps({"name": step["name"], "exit": code, "timed_out": timed_out,
                                           "seconds": round(time.monotonic() - started, 4)}))
        if timed_out or code != 0:
            if timed_out:
                why = f"{step['name']}: time limit of {step['timeout_s']:g}s exceeded"
            elif code < 0:
                why = f"{step['name']}: killed by signal {-code}"
            else:
                why = f"{step['name']}: exit status {code}"
            report(nonce, "failed", why)
            os._exit(1)
    report(nonce, "passed")
    os._exit(0)


def _run_step(step, report_fd):
    """(exit code or -signal, timed out?) of one command; a time-out kills its process group."""
    env = dict(os.environ, **(step.get("env") or {}))
    stdin_fd = None
    if step.get("stdin"):
        stdin_fd = os.memfd_create("stdin", 0)  # no file the program could see or change
        os.write(stdin_fd, step["stdin"].encode("utf-8"))
        os.lseek(stdin_fd, 0, os.SEEK_SET)
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            os.close(report_fd)
            if stdin_fd is not None:
                os.dup2(stdin_fd, 0)
                os.close(stdin_fd)
            os.execvpe(step["argv"][0], step["argv"], env)
        except BaseException as exc:
            os.write(2, f"sandbox: cannot run {step['argv'][0]}: {exc}\n".encode())
        os._exit(127)
    if stdin_fd is not None:
        os.close(stdin_fd)
    ended = _wait(pid, time.monotonic() + step["timeout_s"])
    _kill_step(pid)  # the time-out, or what the step left in its group (a background job)
    _, status = os.waitpid(pid, 0)
    if not ended:
        return None, True
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return -sig, sig == signal.SIGXCPU  # the soft CPU-time limit counts as a time-out
    return os.WEXITSTATUS(status), False


def _wait(pid, deadline):
    """Whether the step ended before the deadline. It is left unreaped, so that its process
    group id stays reserved for the kill that follows."""
    try:
        waiter = os.pidfd_open(pid)
    except OSError:  # kernels before 5.3: poll
        waiter = None
    try:
        while True:
            left = deadline - time.monotonic()
            if waiter is not None:
                if select.select([waiter], [], [], max(left, 0))[0]:
                    return True
            else:
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                    return True
                time.sleep(min(0.005, max(left, 0)))
            if time.monotonic() >= deadline:
                return False
    finally:
        if waiter is not None:
            os.close(waiter)


def _kill_step(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass

"""Sandbox basics: verdicts, fresh working directories, parallel runs, the fallback mode, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megacode.config.schema import ConfigError
from megacode.eval.sandbox import Sandbox
from megacode.eval.sandbox_config import SandboxConfig, SandboxJob

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(SandboxConfig(timeout_s=30, workers=2))


def test_program_and_test_share_globals_and_output_is_captured(sandbox):
    result = sandbox.run("import sys\ndef double(x):\n    return 2 * x\nprint('out')\nprint('err', file=sys.stderr)\n",
                         "assert double(21) == 42\n")
    assert result.status == "passed" and result.exit_code == 0 and result.reason == ""
    assert result.stdout_tail == "out\n" and result.stderr_tail == "err\n"


def test_failed_test_names_the_exception(sandbox):
    result = sandbox.run("def double(x):\n    return x\n", "assert double(21) == 42, 'wrong value'\n")
    assert result.status == "failed" and result.exit_code == 1
    assert result.reason == "test: AssertionError: wrong value"
    assert 'File "<test>", line 1' in result.stderr_tail


def test_syntax_error_and_stdin(sandbox):
    assert "SyntaxError" in sandbox.run("def broken(:\n").reason
    result = sandbox.run("value = input()\n")  # stdin is /dev/null once the harness has read the program
    assert result.status == "failed" and "EOFError" in result.reason


def test_main_block_runs_only_under_main(sandbox):
    program = "ran = []\nif __name__ == '__main__':\n    ran.append(1)\n"
    assert sandbox.run(program, "assert ran == [1]\n").passed
    assert sandbox.run(program, "assert ran == []\n", run_name="__solution__").passed


def test_each_run_has_a_fresh_private_working_directory(sandbox):
    write = "import os\nopen('left_behind.txt', 'w').write('x')\nprint(os.getcwd(), sorted(os.listdir('.')))\n"
    first, second = sandbox.run(write), sandbox.run(write)
    assert first.stdout_tail == second.stdout_tail  # the second run does not see the first's file
    assert first.stdout_tail.endswith("['left_behind.txt']\n")
    cwd = first.stdout_tail.split()[0]
    assert not os.path.exists(os.path.join(cwd, "left_behind.txt"))


def test_environment_is_scrubbed(sandbox):
    result = sandbox.run("import os\nprint(sorted(os.environ))\n")
    assert result.stdout_tail.strip() == str(sorted(["HOME", "LANG", "LC_ALL", "PATH", "TMPDIR"]))


def test_run_many_keeps_order_and_runs_in_parallel(sandbox):
    jobs = [SandboxJob(f"value = {i}\n", f"assert value == {i} and value % 5 != 4\n") for i in range(30)]
    started = time.monotonic()
    results = sandbox.run_many(jobs, progress=False)
    elapsed = time.monotonic() - started
    assert [r.passed for r in results] == [i % 5 != 4 for i in range(30)]
    print(f"sandbox throughput: {len(jobs) / elapsed:.1f} runs/s with {sandbox.config.worker_count} workers")


def test_config_errors_name_the_value():
    with pytest.raises(ConfigError, match="sandbox.memory_mb must be an integer >= 32, got 4"):
        SandboxConfig(memory_mb=4)
    with pytest.raises(ConfigError, match="sandbox.namespaces must be auto, require or off, got 'maybe'"):
        SandboxConfig(namespaces="maybe")
    with pytest.raises(ConfigError, match="sandbox.timeout_s must be > 0, got -1"):
        SandboxConfig(timeout_s=-1)


def test_fallback_without_namespaces_still_contains(tmp_path):
    """namespaces=off is what a kernel refusing user namespaces gets; it must say so and still
    bound processes, keep secrets, refuse Python sockets, detect early exits and leave nothing."""
    config = SandboxConfig(timeout_s=30, namespaces="off", workers=2, max_processes=4)
    sandbox = Sandbox(config)
    assert not sandbox.isolation.namespaces and "NO namespaces" in sandbox.isolation.describe()
    os.environ["MEGACODE_FALLBACK_SECRET"] = "fallback-secret-value"
    try:
        jobs = {
            "fork_bomb": SandboxJob("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
                                    "        pass\n", timeout_s=1.5),
            "fork_count": SandboxJob("import os, time\nn = 0\nfor _ in range(20):\n    try:\n        pid = os.fork()\n"
                                     "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n"
                                     "        os._exit(0)\n    n += 1\nprint(n)\n"),
            "daemon": SandboxJob("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                                 "        time.sleep(60)\n    os._exit(0)\ntime.sleep(0.3)\n"),
            "kill_parent": SandboxJob("import os\nos.kill(os.getppid(), 9)\n"),
            "secret": SandboxJob("import os\nprint(os.environ)\n"),
            "socket": SandboxJob("import socket\nsocket.create_connection(('127.0.0.1', 9))\n"),
            "os_exit": SandboxJob("import os\nos._exit(0)\n", "assert False\n"),
        }
        results = dict(zip(jobs, sandbox.run_many(list(jobs.values()), progress=False)))
    finally:
        os.environ.pop("MEGACODE_FALLBACK_SECRET")
    assert results["fork_bomb"].status == "timed_out"
    assert results["daemon"].passed
    assert "fallback-secret-value" not in results["secret"].stdout_tail
    assert "network access is disabled" in results["socket"].reason
    assert results["os_exit"].status == "failed"
    if sandbox.isolation.dedicated_uid:  # as root: the program alone runs as the run's uid
        assert results["fork_count"].stdout_tail.strip() == "3"
        assert results["kill_parent"].status == "failed" and "PermissionError" in results["kill_parent"].reason
        leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _uid(p) in
                     range(config.uid_base, config.uid_base + 1024)]
        assert leftovers == []


def _uid(pid: str) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        return -1


def test_sandbox_run_cli(tmp_path):
    program = tmp_path / "prog.py"
    program.write_text("print('hello from the sandbox')\nassert 2 + 2 == 4\n")
    done = subprocess.run([sys.executable, str(REPO / "tools" / "sandbox_run.py"), str(program), "--timeout", "20",
                           "--memory-mb", "256"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) >= {"status", "exit_code", "stdout_tail", "stderr_tail", "seconds"}
    assert result["status"] == "passed" and result["stdout_tail"] == "hello from the sandbox\n"

    program.write_text("while True:\n    pass\n")
    done = subprocess.run([sys.executable, str(REPO / "tools" / "sandbox_run.py"), str(program), "--timeout", "1"],
                          capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout)["status"] == "timed_out"

    missing = tmp_path / "missing.py"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "sandbox_run.py"), str(missing)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and f"program not found: {missing}" in done.stderr

"""Hostile programs in the sandbox: each attempt is contained, reported, and the host unharmed.

All programs run once, in parallel, through `Sandbox.run_many` (a module fixture); each test then
checks one outcome and the host-side state the attempt aimed at. The fork bomb is limited by
RLIMIT_NPROC counted inside the run's own user namespace (we run as root here, where the limit
would not apply to an unnamespaced root process): `test_process_limit_is_exact` measures that
bound with a small fork loop before the bomb's result is looked at.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from megacode.eval.sandbox import Sandbox
from megacode.eval.sandbox_config import SandboxConfig, SandboxJob

SECRET_NAME = "MEGACODE_SANDBOX_TEST_SECRET"
SHORT = 1.5  # wall-clock limit of the programs that never end
LONG = 30.0  # for the others: they end by themselves, slowly only on a loaded machine
MAX_PROCESSES = 6
WRONG = "def f():\n    return 2\n"
ABS_TEST = "assert abs(f() - 3) < 1e-9\n"
UNITTEST_TEST = (
    "import unittest\n"
    "class T(unittest.TestCase):\n"
    "    def test_value(self):\n"
    "        self.assertEqual(f(), 3)\n"
    "outcome = unittest.TextTestRunner(verbosity=0).run(unittest.defaultTestLoader.loadTestsFromTestCase(T))\n"
    "assert outcome.wasSuccessful()\n"
)


def sandbox_uid_processes(config: SandboxConfig) -> list[int]:
    """Host pids owned by the sandbox's worker uids (zombies included)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
            except FileNotFoundError:
                continue
            if config.uid_base <= uid < config.uid_base + 1024:  # the range runs take uids from
                found.append(int(entry))
    return found


class Listener:
    """A TCP server on the host's loopback that records every connection it accepts."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join()
        self.server.close()


def programs(canary_dir: Path, canary_file: Path, port: int, tmp_name: str) -> dict[str, SandboxJob]:
    host_pid, repo_file = os.getpid(), Path(__file__).resolve()
    return {
        "infinite_loop": SandboxJob("while True:\n    pass\n", timeout_s=SHORT),
        "sleep_forever": SandboxJob("import time\ntime.sleep(10_000)\n", timeout_s=SHORT),
        "fork_bomb": SandboxJob(
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", timeout_s=SHORT),
        "fork_count": SandboxJob(
            "import os, time\nn = 0\nfor _ in range(50):\n    try:\n        pid = os.fork()\n"
            "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(5)\n        os._exit(0)\n"
            "    n += 1\nprint('forked', n)\n", timeout_s=LONG),
        "daemon_escape": SandboxJob(
            "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n"
            "    os._exit(0)\ntime.sleep(0.3)\n", timeout_s=LONG),
        "memory_bomb": SandboxJob("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))\n", timeout_s=LONG),
        "huge_output": SandboxJob("import sys\nwhile True:\n    sys.stdout.write('y' * 65536)\n", timeout_s=LONG),
        "write_outside": SandboxJob(
            "import os\nhits = []\n"
            f"for path in [{str(canary_dir / 'new.txt')!r}, {str(repo_file.parent / 'pwned.txt')!r}, '/etc/pwned',\n"
            f"             '/tmp/{tmp_name}', '/dev/shm/{tmp_name}', '/var/tmp/{tmp_name}']:\n"
            "    try:\n        with open(path, 'w') as handle:\n            handle.write('x')\n        hits.append(path)\n"
            "    except OSError as err:\n        print('refused', path, err.errno)\nprint('wrote', hits)\n",
            timeout_s=LONG),
        "delete_files": SandboxJob(
            "import os, shutil\n"
            f"for action in (lambda: os.remove({str(canary_file)!r}), lambda: shutil.rmtree({str(canary_dir)!r}),\n"
            f"               lambda: os.rename({str(canary_file)!r}, '/tmp/moved')):\n"
            "    try:\n        action()\n        print('done')\n    except OSError as err:\n        print('refused', err.errno)\n",
            timeout_s=LONG),
        "read_secret": SandboxJob(
            "import os\nprint(dict(os.environ))\n"
            f"for path in ['/proc/1/environ', '/proc/{host_pid}/environ', '/proc/{os.getppid()}/environ']:\n"
            "    try:\n        print(open(path, 'rb').read())\n    except OSError as err:\n        print('refused', path, err.errno)\n",
            timeout_s=LONG),
        "open_socket": SandboxJob(
            "import ctypes, socket, struct\n"
            f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n    print('python connected')\n"
            "except OSError as err:\n    print('python refused:', err)\n"
            "libc = ctypes.CDLL(None, use_errno=True)\nfd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)\n"
            f"address = struct.pack('<HH4s8x', socket.AF_INET, socket.htons({port}), bytes([127, 0, 0, 1]))\n"
            "result = libc.connect(fd, address, len(address))\nprint('libc connect', result, ctypes.get_errno())\n",
            timeout_s=LONG),
        "kill_parent": SandboxJob(
            "import os, signal\n"
            f"for pid in (os.getppid(), {host_pid}, {os.getppid()}, -1):\n"
            "    try:\n        os.kill(pid, signal.SIGKILL)\n        print('sent', pid)\n"
            "    except OSError as err:\n        print('refused', pid, err.errno)\n",
            timeout_s=LONG),
        "os_exit_before_asserts": SandboxJob(WRONG + "import os\nos._exit(0)\n", ABS_TEST, timeout_s=LONG),
        "sys_exit_before_asserts": SandboxJob(WRONG + "import sys\nsys.exit(0)\n", ABS_TEST, timeout_s=LONG),
        "forged_report": SandboxJob(
            WRONG + "import os\nfor fd in range(3, 10):\n    try:\n        os.write(fd, b'0' * 32 + b' passed\\n')\n"
            "    except OSError:\n        pass\nos._exit(0)\n", ABS_TEST, timeout_s=LONG),
        "patch_builtins": SandboxJob(WRONG + "import builtins\nbuiltins.abs = lambda value: 0\n", ABS_TEST, timeout_s=LONG),
        "patch_globals_builtins": SandboxJob(
            WRONG + "__builtins__ = dict(vars(__builtins__), abs=lambda value: 0)\n", ABS_TEST, timeout_s=LONG),
        "patch_math": SandboxJob(WRONG + "import math\nmath.isclose = lambda *a, **k: True\n",
                                 "import math\nassert math.isclose(f(), 3)\n", timeout_s=LONG),
        "patch_unittest": SandboxJob(
            WRONG + "import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n", UNITTEST_TEST,
            timeout_s=LONG),
        "unpatched_unittest": SandboxJob(WRONG, UNITTEST_TEST, timeout_s=LONG),
        "recursion_blowup": SandboxJob(
            "import sys\nsys.setrecursionlimit(10**8)\nnested = []\nfor _ in range(10**6):\n    nested = [nested]\n"
            "repr(nested)\n", timeout_s=LONG),
        "ctypes_crash": SandboxJob("import ctypes\nctypes.string_at(0)\n", timeout_s=LONG),
        "capabilities": SandboxJob(
            "import ctypes\nprint([l for l in open('/proc/self/status') if l.startswith('CapEff')])\n"
            "libc = ctypes.CDLL(None, use_errno=True)\nprint('umount', libc.umount2(b'/tmp', 2), ctypes.get_errno())\n",
            timeout_s=LONG),
    }


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    config = SandboxConfig(timeout_s=LONG, max_processes=MAX_PROCESSES, workers=2, memory_mb=512)
    sandbox = Sandbox(config)
    # A world-writable directory the sandbox can see (the repo is readable): only the read-only
    # mount tree, not file permissions, keeps the program out of it.
    canary_dir = Path(__file__).resolve().parent / f".sandbox-canary-{os.getpid()}"
    canary_dir.mkdir()
    canary_dir.chmod(0o777)
    canary_file = canary_dir / "keep.txt"
    canary_file.write_text("keep")
    canary_file.chmod(0o666)
    tmp_name = f"megacode-sandbox-escape-{os.getpid()}"
    listener = Listener()
    secret = f"s3cret-{os.getpid()}-{time.time_ns()}"
    os.environ[SECRET_NAME] = secret
    try:
        jobs = programs(canary_dir, canary_file, listener.port, tmp_name)
        started = time.monotonic()
        results = dict(zip(jobs, sandbox.run_many(list(jobs.values()), progress=False)))
        elapsed = time.monotonic() - started
        host = {
            "canary_files": sorted(p.name for p in canary_dir.iterdir()) if canary_dir.exists() else None,
            "canary_text": canary_file.read_text() if canary_file.exists() else None,
            "repo_pwned": (Path(__file__).resolve().parent / "pwned.txt").exists(),
            "tmp_escape": [d for d in ("/tmp", "/dev/shm", "/var/tmp") if os.path.exists(f"{d}/{tmp_name}")],
            "accepted": listener.accepted,
        }
        leftovers = sandbox_uid_processes(config)
        for _ in range(30):  # processes of a finished run are gone already; allow the kernel a moment
            if not leftovers:
                break
            time.sleep(0.1)
            leftovers = sandbox_uid_processes(config)
        host["leftovers"] = leftovers
        yield {"results": results, "host": host, "secret": secret, "sandbox": sandbox, "elapsed": elapsed}
    finally:
        os.environ.pop(SECRET_NAME, None)
        listener.close()
        shutil.rmtree(canary_dir, ignore_errors=True)


def test_namespaces_are_in_use_here(outcome):
    iso = outcome["sandbox"].isolation
    assert iso.namespaces and iso.notes == "", iso.describe()  # this machine allows all of it
    assert iso.dedicated_uid == (os.geteuid() == 0)


@pytest.mark.parametrize("name", ["infinite_loop", "sleep_forever", "fork_bomb"])
def test_endless_programs_time_out(outcome, name):
    result = outcome["results"][name]
    assert result.status == "timed_out", result
    assert "wall-clock" in result.reason
    assert SHORT <= result.seconds < SHORT + 10


def test_process_limit_is_exact(outcome):
    result = outcome["results"]["fork_count"]
    assert result.status == "passed", result
    assert result.stdout_tail.strip() == f"forked {MAX_PROCESSES - 1}"  # the program itself is one


def test_no_process_survives_any_run(outcome):
    assert outcome["host"]["leftovers"] == []
    assert outcome["results"]["daemon_escape"].status == "passed"


def test_memory_bomb_fails_with_memory_error(outcome):
    result = outcome["results"]["memory_bomb"]
    assert result.status == "failed" and "MemoryError" in result.reason, result


def test_huge_output_is_capped(outcome):
    result = outcome["results"]["huge_output"]
    assert result.status == "failed" and "File too large" in result.reason, result
    assert result.stdout_tail == "y" * SandboxConfig().output_tail_bytes


def test_writes_outside_the_working_directory_do_not_reach_the_host(outcome):
    result, host = outcome["results"]["write_outside"], outcome["host"]
    assert result.status == "passed", result
    assert host["canary_files"] == ["keep.txt"] and not host["repo_pwned"] and host["tmp_escape"] == []
    assert "refused /etc/pwned 30" in result.stdout_tail  # EROFS: the whole host tree is read-only


def test_deleting_files_is_refused(outcome):
    result, host = outcome["results"]["delete_files"], outcome["host"]
    assert result.stdout_tail.count("refused") == 3, result
    assert host["canary_text"] == "keep"


def test_environment_secret_is_not_visible(outcome):
    result = outcome["results"]["read_secret"]
    assert result.status == "passed", result
    assert outcome["secret"] not in result.stdout_tail + result.stderr_tail
    assert SECRET_NAME not in result.stdout_tail


def test_network_is_unreachable(outcome):
    result = outcome["results"]["open_socket"]
    assert result.status == "passed", result
    assert outcome["host"]["accepted"] == 0
    assert "python refused: network access is disabled" in result.stdout_tail
    # The C-level socket bypasses the audit hook; the empty network namespace stops it.
    assert "libc connect -1 101" in result.stdout_tail  # ENETUNREACH


def test_killing_the_parent_does_not_reach_the_host(outcome):
    result = outcome["results"]["kill_parent"]
    assert result.status == "passed", result
    assert f"refused {os.getpid()} 3" in result.stdout_tail  # ESRCH: the host is not in its pid namespace


@pytest.mark.parametrize("name", ["os_exit_before_asserts", "sys_exit_before_asserts", "forged_report"])
def test_exiting_before_the_asserts_is_not_a_pass(outcome, name):
    result = outcome["results"][name]
    assert result.status == "failed", result
    assert "before the tests completed" in result.reason


@pytest.mark.parametrize("name,helper", [("patch_builtins", "builtins.abs"), ("patch_globals_builtins", "__builtins__"),
                                         ("patch_math", "math.isclose"),
                                         ("patch_unittest", "unittest.TestCase.assertEqual")])
def test_monkeypatched_check_helpers_are_caught(outcome, name, helper):
    result = outcome["results"][name]
    assert result.status == "failed", result
    assert helper in result.reason


def test_unpatched_wrong_program_fails_its_unittest(outcome):
    result = outcome["results"]["unpatched_unittest"]
    assert result.status == "failed" and "AssertionError" in result.reason


@pytest.mark.parametrize("name", ["recursion_blowup", "ctypes_crash"])
def test_c_level_crashes_are_reported(outcome, name):
    result = outcome["results"][name]
    assert result.status == "crashed" and result.exit_code == -11 and result.reason == "killed by SIGSEGV", result
    assert "Segmentation fault" in result.stderr_tail  # faulthandler's report with the program's frame


def test_program_has_no_capabilities(outcome):
    result = outcome["results"]["capabilities"]
    assert "CapEff:\\t0000000000000000" in result.stdout_tail
    assert "umount -1 1" in result.stdout_tail  # EPERM


def test_cpu_time_limit(outcome):
    sandbox = Sandbox(SandboxConfig(timeout_s=LONG, cpu_time_s=1, workers=1))
    result = sandbox.run("while True:\n    pass\n")
    assert result.status == "timed_out" and "CPU-time limit of 1s" in result.reason, result
    assert result.seconds < 10

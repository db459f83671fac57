"""The sandboxed side of `megacode.eval.sandbox`: isolate, then run one program and its test.

The host runs this file's text as `python -I -S -B -c <text> <spec json>` in a new session with
a scrubbed environment; with namespaces, already as the sandbox uid. It uses the standard library only
and never imports megacode: the interpreter may be a system Python for which the project's
virtual environment is unreadable (a venv under /root is closed to an unprivileged uid).

Process tree when namespaces are on:

    bootstrap  host pid namespace. Unshares user, network, mount, pid, IPC and UTS namespaces,
               maps its own uid only, mounts private size-capped tmpfs over the shared writable
               directories (/tmp, /var/tmp, /dev/shm, /run/lock), sets the rlimits, forks:
    init       pid 1 of the new pid namespace, dies with the bootstrap (PDEATHSIG). Mounts a
               /proc of its own, forks the program, reaps, reports the program's wait status.
               Its exit makes the kernel kill every process left in the namespace.
    program    own session, no capabilities, no_new_privs; runs the program, then the test.

Without namespaces the bootstrap is the supervisor itself, a child subreaper. Started as root, it
stays root (out of the program's reach) and the program alone drops to the run's uid; when the
program ends it kills every process of that uid and reaps them. Started as another user, it
can only kill the program's process group.

The spec (argv) holds no secret. stdin holds {"program", "test", "nonce"} and is replaced by
/dev/null once read. Reports are lines "<nonce> <word> [detail]" on fd 3: `ready`,
`note <isolation missing>`, `status <wait status>` (from the supervisor), `passed`,
`failed <why>`, `exited <why>`, `tampered <names>`, and in command mode (stdin also holds
"files", "steps" and the source of sandbox_steps.py) `step {...}` after each step. Only the harness knows the nonce, so a program that exits early (sys.exit,
os._exit, a killed supervisor) cannot produce `passed`; the nonce is not hidden from code that
deliberately searches the interpreter's memory for it, which is outside the threat model of
evaluating model-written code.
"""

import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 0x4000, 1 << 18
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 0x1  # same number on all arches
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
CAPABILITY_VERSION_3 = 0x20080522
REPORT_FD = 3
EXIT_SETUP = 121  # the host turns this into SandboxError: the sandbox, not the program, failed
WORKDIR_NS = "/tmp/work"
# Directories every uid may write; each gets a private tmpfs so nothing written there persists.
SHARED_WRITABLE = ("/var/tmp", "/dev/shm", "/run/lock")
# Events that reach other machines. AF_UNIX addresses (str/bytes) stay allowed: asyncio and
# multiprocessing use local sockets.
NET_EVENTS = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
              "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo"}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _report(nonce, word, detail=""):
    line = f"{nonce} {word} {detail}".rstrip().replace("\r", " ")
    os.write(REPORT_FD, (line.replace("\n", " ")[:2000] + "\n").encode("utf-8", "replace"))


def _write_file(path, text):
    with open(path, "w") as handle:
        handle.write(text)


def _enter_namespaces(spec):
    """User namespace mapping only our own uid; the rest are owned by it, so no root is needed."""
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    _check(_libc.unshare(flags), "unshare(user|net|mount|pid|ipc|uts)")
    _write_file("/proc/self/setgroups", "deny")  # required before an unprivileged gid_map
    _write_file("/proc/self/uid_map", f"{uid} {uid} 1")
    _write_file("/proc/self/gid_map", f"{gid} {gid} 1")
    # Private propagation: our mounts never show up in the host's namespace.
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    try:
        _read_only_tree()
    except OSError as err:  # kernels before 5.12: keep the other namespaces, and say so
        _notes.append(f"host file tree left writable where permissions allow ({err})")
    options = f"mode=0700,uid={uid},gid={gid}"
    _check(_libc.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV,
                       f"size={spec['tmpfs_mb']}m,nr_inodes=4096,{options}".encode()), "mount tmpfs /tmp")
    for path in SHARED_WRITABLE:
        if os.path.isdir(path):
            _check(_libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                               f"size=1m,nr_inodes=64,{options}".encode()), f"mount tmpfs {path}")
    os.mkdir(WORKDIR_NS, 0o700)
    _libc.sethostname(b"sandbox", 7)  # the UTS namespace is ours; hides the host's name


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _read_only_tree():
    """Make every inherited mount read-only (mount_setattr, Linux 5.12+), so a world-writable
    host directory is no way out; the tmpfs mounted afterwards are the only writable places."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    long = ctypes.c_long  # syscall() reads every argument as a long
    _check(_libc.syscall(long(SYS_MOUNT_SETATTR), long(AT_FDCWD), ctypes.c_char_p(b"/"), long(AT_RECURSIVE),
                         ctypes.byref(attr), long(ctypes.sizeof(attr))), "mount_setattr(/, recursive read-only)")


def _set_limits(spec):
    mib = 1024 * 1024
    cpu = int(spec["cpu_time_s"])
    limits = [
        (resource.RLIMIT_AS, spec["memory_mb"] * mib),
        (resource.RLIMIT_FSIZE, spec["file_size_mb"] * mib),
        (resource.RLIMIT_NOFILE, spec["max_open_files"]),
        (resource.RLIMIT_CORE, 0),
    ]
    for which, value in limits:
        resource.setrlimit(which, (value, value))
    # Soft limit sends SIGXCPU (reported as a time-out); the hard one, a second later, SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if spec["nproc"] is not None:
        # Counted per (user namespace, uid), or per uid without namespaces: the host only asks
        # for it where that count covers this sandbox alone.
        resource.setrlimit(resource.RLIMIT_NPROC, (spec["nproc"], spec["nproc"]))


def _exit_like(status):
    """Leave with the same outcome as a child whose wait status is `status`."""
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


_children = []
_sweep_spec = {}
_notes = []  # isolation that could not be had, reported to the host as "note" lines


def _sweep():
    """Kill every process of the run outside a pid namespace (there, init's exit does it)."""
    uid = _sweep_spec.get("program_uid")
    if uid is not None:
        # The program's uid is reserved to this run: kill(-1) as that uid reaches exactly the
        # run's processes, daemons that left the session included. We stay root, out of reach.
        helper = os.fork()
        if helper == 0:
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                for _ in range(3):  # a fork racing the first kill(-1) is caught by the next
                    os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
    for pid in _children:
        try:
            os.killpg(pid, signal.SIGKILL)  # the program's own session and group
        except OSError:
            pass


def _on_stop(signum, frame):
    """The host's deadline: SIGTERM to the bootstrap, the only process the host signals. Kill
    what we forked and keep waiting, so that we, not the host's init, reap it (no zombies)."""
    if _sweep_spec.get("namespaces"):
        for pid in _children:
            try:
                os.kill(pid, signal.SIGKILL)  # init: its death kills its whole pid namespace
            except OSError:
                pass
    else:
        _sweep()


def _fork_tracked():
    """fork() whose child the stop handler kills; the child gets default signal handling."""
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _children.clear()
        return 0
    _children.append(pid)
    return pid


def _become_init():
    """Fork pid 1 of the new pid namespace; only the child returns."""
    pid = _fork_tracked()
    if pid:
        _, status = os.waitpid(pid, 0)
        _exit_like(status)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # A /proc for the new pid namespace hides the host's processes; best effort, since some
    # container runtimes mask /proc so that a fresh mount is refused.
    if _libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None) != 0:
        _notes.append(f"no /proc of its own ({os.strerror(ctypes.get_errno())}): host processes are listed")


def _supervise(spec, payload, nonce):
    if not spec["namespaces"]:
        # Orphans of the program (double-forked daemons) become our children, so we reap them.
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    pid = _fork_tracked()
    if pid == 0:
        _run_program(spec, payload, nonce)  # never returns
    payload.clear()
    status = None
    while status is None:
        try:
            done, raw = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if done == pid:
            status = raw
    if status is not None:
        _report(nonce, "status", str(status))
    if not spec["namespaces"]:
        _sweep()
        # With the run's own uid every leftover is dead or dying: wait for each. Without one,
        # a daemon that left the process group survives the sweep: reap only what has exited.
        flags = 0 if spec["program_uid"] is not None else os.WNOHANG
        while True:
            try:
                if os.waitpid(-1, flags)[0] == 0:
                    break
            except ChildProcessError:
                break
    os._exit(0)


def _drop_to(uid):
    """Without namespaces and as root: the program alone runs as the run's uid."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _drop_capabilities():
    header = _CapHeader(CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset(no capabilities)")


def _block_network(event, args):
    if event in NET_EVENTS:
        address = args[1] if len(args) > 1 else None
        if event.startswith("socket.get") or not isinstance(address, (str, bytes)):
            raise PermissionError(f"network access is disabled in the sandbox ({event})")


def _watched_objects():
    """Objects the tests rely on, by name: replacing one would let a wrong program pass."""
    import builtins
    import math
    watched = {f"builtins.{k}": v for k, v in vars(builtins).items()}
    watched.update({f"math.{k}": v for k, v in vars(math).items()})
    return watched


def _unittest_patches():
    """Assertion methods of unittest.TestCase not defined in unittest.case: replaced by the
    program. (Class attributes assigned from Python raise no audit event, and importing unittest
    up front for a snapshot would cost every run ~10 ms, so they are recognised by origin.)"""
    case = sys.modules.get("unittest.case")
    if case is None:
        return []
    import builtins
    bad = []
    for name, value in vars(case.TestCase).items():
        if name.startswith(("assert", "fail", "_baseAssert", "_getAssert")) and callable(value) \
                and name != "failureException" and getattr(value, "__module__", None) != "unittest.case":
            bad.append(f"unittest.TestCase.{name}")
    if case.TestCase.failureException is not builtins.AssertionError:
        bad.append("unittest.TestCase.failureException")
    return bad


def _run_program(spec, payload, nonce):
    os.setsid()  # the program's kill(0, ...) reaches only its own process group
    if spec["program_uid"] is not None:
        _drop_to(spec["program_uid"])
    if not spec["namespaces"]:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after the uid change, which clears it
    os.chdir(spec["workdir"])
    if spec["namespaces"]:
        _drop_capabilities()
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if "steps" in payload:  # command mode: the host sent sandbox_steps.py's source along
        runner = {"__name__": "sandbox_steps"}
        exec(compile(payload.pop("runner"), "<sandbox_steps>", "exec"), runner)
        runner["run_steps"](payload, nonce, _report, REPORT_FD)  # never returns
    import builtins
    import faulthandler
    faulthandler.enable()  # a C-level crash prints the Python stack to stderr
    if spec["block_sockets"]:
        sys.addaudithook(_block_network)
    program, test = payload.pop("program"), payload.pop("test")
    watched = _watched_objects()
    namespace = {"__name__": spec["run_name"], "__builtins__": builtins}

    def changed():
        bad = [name for name, value in watched.items() if _lookup(name) is not value]
        if namespace.get("__builtins__") is not builtins:
            bad.append("__builtins__")
        return sorted(set(bad + _unittest_patches()))

    for phase, source in (("program", program), ("test", test)):
        try:
            code = compile(source, f"<{phase}>", "exec", dont_inherit=True, optimize=0)
            exec(code, namespace)
        except SystemExit as exc:
            _flush()
            _report(nonce, "exited", f"the {phase} raised SystemExit({exc.code!r}) before the tests completed")
            os._exit(1)
        except BaseException as exc:  # the program's failure, reported, never the harness's
            # Verdict first: after a MemoryError the traceback's formatting may fail as well.
            _report(nonce, "failed", f"{phase}: {type(exc).__name__}: {str(exc)[:400]}")
            try:
                import traceback
                traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)  # from the program's frame
                _flush()
            finally:
                os._exit(1)
        bad = changed()
        if bad:
            _flush()
            _report(nonce, "tampered", f"the {phase} replaced test helpers: {', '.join(bad[:10])}")
            os._exit(1)
    _flush()
    _report(nonce, "passed")
    os._exit(0)  # skip atexit handlers and non-daemon threads the program may have left


def _lookup(name):
    module, attr = name.split(".", 1)
    return getattr(sys.modules[module], attr, _lookup)  # a deleted name differs from any value


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a full output file (RLIMIT_FSIZE) must not hide the verdict
            pass


def main():
    spec = json.loads(sys.argv[1])
    if spec["report_fd"] != REPORT_FD:
        os.dup2(spec["report_fd"], REPORT_FD)
        os.close(spec["report_fd"])
    payload = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    nonce = payload.pop("nonce")
    _sweep_spec.update(spec)
    signal.signal(signal.SIGTERM, _on_stop)
    try:
        if spec["namespaces"]:
            _enter_namespaces(spec)
        _set_limits(spec)
        if spec["namespaces"]:
            _become_init()
        _report(nonce, "ready")
        for note in _notes:
            _report(nonce, "note", note)
    except Exception as exc:
        os.write(2, f"sandbox setup failed: {type(exc).__name__}: {exc}\n".encode())
        os._exit(EXIT_SETUP)
    _supervise(spec, payload, nonce)


if __name__ == "__main__":
    main()

"""Processes: spawning a container (setup child, PID-1 init, main process), waiting, exec.

    runtime process ──fork──► setup child S (or the fork server cloned S ahead of time with
                                 CLONE_PARENT and S prepared itself (prepare_setup_child) while it
                                 waited for its request: S is a child of the runtime process
                                 either way; runtime.forkserver).
                                 The runtime moves S into the container cgroup at once (JOIN_INLINE;
                                 a helper thread did it while S worked when moves cost an RCU grace
                                 period, but the thread's start/GIL handoff cost more than the move
                                 now does); S forks nothing before that is done:
                                 joins/creates the netns, writes sysctls,
                                 unshare(USER|MNT|PID|UTS|IPC) in one call (they belong to the userns),
                                 waits for the runtime to write uid_map/gid_map, binds the rootfs,
                                 becomes container root, builds /dev, sets the hostname, then
                                 clone(CLONE_PARENT) ──► init I (PID 1, a child of the runtime
                                 process so it can be waited for): mounts /proc, pivot_root,
                                 fork ──► main M: exec(argv) with logs on fd 1/2.
                              S reports I's pid and exits (reaped once the start is done).

Every stage talks to the runtime over one CLOEXEC report pipe ("U" userns ready, "J" ready to
fork once in the cgroup, "P pid",
"E errno text" exec failed, "F text" setup failed); EOF means the main process exec'd.
Children never return into the caller's code: they os._exit().
"""
from __future__ import annotations

import errno
import gc
import os
import select
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from runtime import caps as capabilities
from runtime import namespaces as ns
from runtime import rootfs
from runtime.cgroups import ContainerCgroup
from runtime.forkserver import ForkServer
from runtime.spec import DEFAULT_PATH, IdMap
from runtime.state import proc_start_time

__all__ = ["ASYNC_SIGNALS", "FORWARDED_SIGNALS", "INIT_TITLE", "Launch", "SpawnResult", "prepare_setup_child",
           "run_setup_child", "spawn", "status_to_code", "wait_exit"]

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_SPAWN_TIMEOUT = 30.0
_SYNC_SIGNALS = frozenset({signal.SIGKILL, signal.SIGSTOP, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE,
                           signal.SIGILL, signal.SIGTRAP, signal.SIGSYS})  # fmt: skip
_ASYNC_SIGNALS = frozenset(signal.valid_signals() - _SYNC_SIGNALS)
JOIN_INLINE = True  # see spawn(): a thread's start and GIL handoff cost more than the move itself
ASYNC_SIGNALS = _ASYNC_SIGNALS  # what stays blocked from before the setup child exists until init runs
INIT_TITLE = "netsim-init"


@dataclass(frozen=True)
class Launch:
    """Everything the forked children need: plain data, prepared before fork."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    workdir: str
    hostname: str
    rootfs: str
    stdout_path: str
    stderr_path: str
    exit_path: str
    netns: str | None = None
    sysctls: Mapping[str, str] = field(default_factory=dict)
    idmap: IdMap | None = None
    caps: int = 0  # capability mask root inside keeps (runtime.caps)
    binds: tuple[str, ...] = ()  # host dirs ("usr", ...) bound read-only at the same place in the rootfs


@dataclass(frozen=True)
class SpawnResult:
    """pid of the init (None if it was never created) and the error, if start failed."""

    pid: int | None
    error: str | None = None


def status_to_code(si_code: int, si_status: int) -> int:
    """Shell-style exit code: the status, or 128+signal."""
    return si_status if si_code == os.CLD_EXITED else 128 + si_status


# ---- runtime side ---------------------------------------------------------------------------


class _Reports:
    """Reads newline-terminated reports from the pipe, with a deadline."""

    def __init__(self, fd: int, deadline: float) -> None:
        self.fd, self.deadline, self.buf = fd, deadline, b""

    def next(self) -> str | None:
        """The next report line, or None at EOF."""
        while b"\n" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError("container setup did not report in time")
            chunk = os.read(self.fd, 4096)
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode("utf-8", "replace")


class _Joiner:
    """Moves `pid` into the container cgroup, on a helper thread or (inline) at once."""

    def __init__(self, cgroup: ContainerCgroup, pid: int, inline: bool = False) -> None:
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None
        if inline:
            self._run(cgroup, pid)
            return
        self._thread = threading.Thread(target=self._run, args=(cgroup, pid), name=f"cgroup-join-{pid}")
        self._thread.start()

    def _run(self, cgroup: ContainerCgroup, pid: int) -> None:
        try:
            cgroup.join(pid)
        except OSError as exc:
            self._error = exc

    def result(self) -> OSError | None:
        if self._thread is not None:
            self._thread.join()
        return self._error


def _write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _fork_setup(launch: Launch, report_w: int, go_r: int, fds: list[int]) -> int:
    """Fork the setup child from this interpreter (no fork server)."""
    # Signals stay blocked across fork: the child must never unwind into the caller's code
    # (a KeyboardInterrupt raised in it before it installs its own dispositions would).
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _ASYNC_SIGNALS)
    try:
        setup_pid = os.fork()
        if setup_pid == 0:  # pragma: no cover - runs in the child
            _setup_child(launch, report_w, go_r, fds)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return setup_pid


def spawn(launch: Launch, cgroup: ContainerCgroup, server: ForkServer | None = None) -> SpawnResult:
    """Create the container's processes; return once the main process exec'd (or failed).

    With `server` the setup child is cloned by the fork server (runtime.forkserver), a child of
    this process all the same; if the server fails, it is forked here."""
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
    fds = [os.open(launch.stdout_path, flags | os.O_APPEND, 0o644),
           os.open(launch.stderr_path, flags | os.O_APPEND, 0o644),
           os.open(launch.exit_path, flags | os.O_TRUNC, 0o644)]  # fmt: skip
    try:
        setup_pid = -1
        if server is not None:
            try:
                setup_pid = server.clone_setup(launch, [report_w, go_r, *fds])
            except OSError:
                setup_pid = -1
        if setup_pid < 0:
            setup_pid = _fork_setup(launch, report_w, go_r, fds)
    except OSError:
        for fd in (report_r, report_w, go_r, go_w, *fds):
            os.close(fd)
        raise
    for fd in (report_w, go_r, *fds):
        os.close(fd)
    init_pid: int | None = None
    # The move into the cgroup: inline (0.4-0.8 ms measured on kernel 6.18, cgroup v1) or, where a
    # move waits for an RCU grace period, on a helper thread while the setup child builds its
    # namespaces; either way the child forks nothing (nothing escapes the cgroup) before "2".
    joiner = _Joiner(cgroup, setup_pid, inline=JOIN_INLINE)
    try:
        reports = _Reports(report_r, time.monotonic() + _SPAWN_TIMEOUT)
        while True:
            line = reports.next()
            if line is None:
                if init_pid is None:
                    return SpawnResult(None, "container setup exited without reporting")
                return SpawnResult(init_pid)
            kind, _, rest = line.partition(" ")
            if kind == "U":
                if launch.idmap is not None:
                    _write_file(f"/proc/{setup_pid}/uid_map", launch.idmap.line())
                    _write_file(f"/proc/{setup_pid}/gid_map", launch.idmap.line())
                os.write(go_w, b"1")
            elif kind == "J":
                error = joiner.result()
                if error is not None:
                    return SpawnResult(None, f"cannot move the container into its cgroup: {error}")
                os.write(go_w, b"2")
            elif kind == "P":  # from the init: the setup child, suspended in its clone, goes now
                init_pid = int(rest)
                os.kill(setup_pid, signal.SIGKILL)
            elif kind == "E":
                errno_, _, text = rest.partition(" ")
                return SpawnResult(init_pid, f"cannot exec {list(launch.argv)!r}: {text} (errno {errno_})")
            else:
                return SpawnResult(init_pid, f"container setup failed: {rest or line}")
    except (OSError, TimeoutError, ValueError) as exc:
        return SpawnResult(init_pid, f"container setup failed: {exc}")
    finally:
        joiner.result()
        if init_pid is None:  # it never finished its work (or the init never ran): it never will
            try:
                os.kill(setup_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.waitpid(setup_pid, 0)
        os.close(report_r)
        os.close(go_w)


def wait_exit(pid: int, start: int | None, timeout: float | None) -> tuple[bool, int | None]:
    """Wait up to `timeout` s for process `pid` (started at `start`) to exit.

    Returns (exited, exit code). The code is known only when `pid` is our child (we reap it);
    otherwise it is None and the caller reads the init's exit_status file.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True, None
    try:
        if start is not None and proc_start_time(pid) != start:
            return True, None  # the pid now names another process
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
            return False, None
        try:
            res = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return True, None
        if res is None:  # pragma: no cover - readable pidfd means it exited
            return True, None
        return True, status_to_code(res.si_code, res.si_status)
    finally:
        os.close(pidfd)


# ---- child side (never returns) -------------------------------------------------------------


def _report(fd: int, line: str) -> None:
    try:
        os.write(fd, (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def _close_all_but(keep: Sequence[int]) -> None:
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _not_default(signals: frozenset[int]) -> list[int]:
    """Those of `signals` this process ignores or catches, as the kernel records them
    (/proc/self/status SigIgn, SigCgt: also what C code set behind Python's back). Resetting
    only those, not every signal, saves ~60 sigaction calls per container."""
    masks = 0
    with open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith((b"SigIgn:", b"SigCgt:")):
                masks |= int(line.split()[1], 16)
    return [sig for sig in signals if masks >> (sig - 1) & 1]


def prepare_setup_child() -> str | None:  # pragma: no cover - runs in a setup child
    """What a setup child does before it knows its Launch: no garbage collection, default
    signal dispositions (signals stay blocked until the init installs its handlers), stdio on
    /dev/null, the OOM killer told to spare it. The fork server's spare children do this ahead
    of their request (runtime.forkserver). The error text, or None."""
    gc.disable()  # a collection would walk (and copy-on-write) every object of the caller's heap
    try:
        signal.set_wakeup_fd(-1)
        null = os.open("/dev/null", os.O_RDWR)  # the caller's stdio (a pipe, a terminal) is not ours
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        for sig in _not_default(_ASYNC_SIGNALS):
            signal.signal(sig, signal.SIG_DFL)
        try:  # let the OOM killer pick the main process, not init (needs CAP_SYS_RESOURCE)
            _write_file("/proc/self/oom_score_adj", "-1000")
        except PermissionError:
            pass
    except BaseException as exc:  # noqa: BLE001 - reported once there is a report pipe
        return f"signals: {exc}"
    return None


def _setup_child(launch: Launch, report_w: int, go_r: int, fds: list[int]) -> None:  # pragma: no cover
    run_setup_child(launch, report_w, go_r, fds, prepare_setup_child())


def run_setup_child(launch: Launch, report_w: int, go_r: int, fds: list[int],
                    prepared: str | None) -> None:  # pragma: no cover - runs in a setup child
    """The setup child's work once prepare_setup_child() is done (`prepared`: its error, if
    any): a session of its own (a Ctrl-C meant for the caller's process group is not for us;
    it also leaves the fork server's scheduling group, see forkserver.serve), namespaces, root
    fs, then the init. Never returns."""
    runtime_pid = os.getppid()
    if prepared is None and os.getsid(0) != os.getpid():
        try:
            os.setsid()
        except OSError as exc:
            prepared = f"setsid: {exc}"
    if prepared is not None:
        _report(report_w, f"F {prepared}")
        os._exit(126)
    stage = "netns"
    try:
        if launch.netns is not None:
            ns.join_netns(launch.netns)
        else:
            ns.unshare(ns.CLONE_NEWNET)
            ns.loopback_up()
        stage = "sysctls"
        ns.write_net_sysctls(launch.sysctls)
        stage = "sysfs"
        ns.unshare(ns.CLONE_NEWNS)  # host root's own mount namespace, only to mount sysfs
        ns.mount(None, "/", None, ns.MS_REC | ns.MS_PRIVATE)
        rootfs.mount_sysfs(launch.rootfs)
        stage = "binds"
        rootfs.bind_host_dirs(launch.rootfs, launch.binds)
        stage = "unshare"
        flags = ns.CLONE_NEWNS | ns.CLONE_NEWPID | ns.CLONE_NEWUTS | ns.CLONE_NEWIPC
        ns.unshare(flags | (ns.CLONE_NEWUSER if launch.idmap is not None else 0))
        _report(report_w, "U")  # the runtime writes uid_map/gid_map
        stage = "capabilities"  # meanwhile: the init and main process inherit the bounding set
        capabilities.drop_bounding(launch.caps)
        if os.read(go_r, 1) != b"1":
            os._exit(1)  # the runtime went away
        stage = "rootfs"
        rootfs.enter_rootfs(launch.rootfs)
        stage = "credentials"
        if launch.idmap is not None:
            os.setresgid(0, 0, 0)
            os.setgroups([])
            os.setresuid(0, 0, 0)
        else:
            os.setgroups([])
        stage = "dev"
        rootfs.setup_dev()
        stage = "hostname"
        ns.sethostname(launch.hostname)
        stage = "cgroup"
        _report(report_w, "J")  # fork nothing until the runtime has moved us into the cgroup
        if os.read(go_r, 1) != b"2":
            os._exit(1)
        stage = "clone"
        # The init runs in our memory (clone_vm_parent: no copy of this interpreter, no
        # copy-on-write faults in it) while we stay suspended; the runtime kills us once the
        # init reported its pid, and the kernel does if the runtime is gone (a parent's death
        # signal, checked against a runtime that went before it was set).
        ns.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != runtime_pid:
            os._exit(1)
        if ns.clone_vm_parent() == 0:
            _init(launch, report_w, fds)
        os._exit(1)  # not reached: never resumed, or never alive again with that memory
    except BaseException as exc:  # noqa: BLE001 - report everything, never return into the caller
        _report(report_w, f"F {stage}: {exc}")
    os._exit(126)


def _init(launch: Launch, report_w: int, fds: list[int]) -> None:  # pragma: no cover
    """PID 1: finish the root fs, start the main process, forward signals, reap, exit like main."""
    exit_fd = fds[2]
    stage = "init"
    try:
        _report(report_w, f"P {os.readlink('/proc/self')}")  # our pid on the host (its /proc, still)
        _close_all_but([report_w, *fds])
        ns.set_cmdline(INIT_TITLE)  # ps in the container shows this, not the runtime's argv
        stage = "proc"
        rootfs.mount_proc()
        rootfs.mask_paths()
        stage = "pivot_root"
        rootfs.pivot_into_cwd()
        stage = "workdir"
        os.chdir(launch.workdir)
        stage = "capabilities"  # init keeps no more than the main process gets
        capabilities.set_no_new_privs()
        capabilities.drop_to(launch.caps, bounding=False)  # the setup child dropped the bounding set
        main: list[int] = []
        pending: list[int] = []

        def forward(signum: int, _frame: object) -> None:
            if main:
                try:
                    os.kill(main[0], signum)
                except ProcessLookupError:
                    pass
            else:
                pending.append(signum)

        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, forward)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a vanished runtime must not kill PID 1
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        stage = "exec"
        try:
            pid = _spawn_main(launch, fds)
        except OSError as exc:
            _report(report_w, f"E {exc.errno} {exc.strerror}")
            os._exit(127)
        main.append(pid)
        for signum in pending:
            os.kill(pid, signum)
    except BaseException as exc:  # noqa: BLE001
        _report(report_w, f"F {stage}: {exc}")
        os._exit(126)
    for fd in fds[:2]:  # the main process has its own: init keeps only the exit status file
        os.close(fd)
    os.close(report_w)  # the runtime sees EOF: argv has been exec'd
    while True:
        try:
            child, status = os.wait()
        except ChildProcessError:  # cannot happen while main lives
            code = 255
            break
        if child == main[0]:
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            break
    try:
        os.write(exit_fd, f"{code}\n".encode())
    finally:
        os._exit(code)


def _resolve(argv0: str, path: str) -> str:
    """execvp's PATH search, against the container's PATH (posix_spawnp would use ours)."""
    if "/" in argv0:
        return argv0
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", argv0)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv0)


def _spawn_main(launch: Launch, fds: list[int]) -> int:  # pragma: no cover
    """posix_spawn (vfork: no copy of this interpreter) the main process, in its own session,
    signals at their defaults, stdin /dev/null and stdout/stderr on the log files."""
    path = _resolve(launch.argv[0], launch.env.get("PATH", DEFAULT_PATH))
    # The main process must be the OOM killer's choice, not init. init is at -1000 when the
    # runtime had CAP_SYS_RESOURCE; the main process then goes back to 0. Without it init is at 0
    # and, as a fork of the runtime's interpreter, may look bigger than the main process: init
    # raises itself to 1000 for the spawn (inherited) and drops back to 0 (allowed without a
    # capability). init is not dumpable (its credentials changed), so its /proc files belong to
    # host root: it is made dumpable for just these writes (no container process exists yet).
    with open("/proc/self/oom_score_adj", "rb") as fh:
        lowered = fh.read().strip() != b"0"
    if not lowered:
        ns.set_dumpable(True)
        _write_file("/proc/self/oom_score_adj", "1000")
    try:
        pid = os.posix_spawn(
            path,
            list(launch.argv),
            dict(launch.env),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, fds[0], 1),
                (os.POSIX_SPAWN_DUP2, fds[1], 2),
            ],
            setsid=True,
            setsigmask=(),
            setsigdef=signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP},
        )
    finally:
        if not lowered:
            _write_file("/proc/self/oom_score_adj", "0")
            ns.set_dumpable(False)
    if lowered:
        try:
            _write_file(f"/proc/{pid}/oom_score_adj", "0")
        except OSError:  # it already exited
            pass
    return pid

"""A fork server: a small, long-lived helper interpreter that makes containers' setup children.

Forking the caller's interpreter (tens of MB of heap and page tables, threads) costs ~3.4 ms
per container before the child runs, and the PID-1 init — a clone of that child — carries the
same address space. The fork server is a fresh `python -S -I` that imports only runtime.process
and its few dependencies (runtime/__init__ and everything netsim is skipped): ~16 MB, single
threaded, so a clone of it is much cheaper. And it clones ahead of time:

    runtime process ──Popen──► fork server F (child of the runtime, started once per Runtime,
                                  on first use; it blocks every asynchronous signal and sets
                                  every disposition to the default, for its clones)
        F: clone(CLONE_PARENT) ──► a spare setup child S, a child of the *runtime* process (so
                 the runtime waits for it and moves it into the cgroup exactly as with a local
                 fork). S runs process.prepare_setup_child(), warms up (_SAMPLE) and waits for
                 its request on a socket pair of its own.
        F → runtime: {"spare": pid} with the runtime's end of S's socket pair (SCM_RIGHTS), or
                 {"error": text} when the clone failed
        runtime → S: the request, a SOCK_SEQPACKET message = the Launch as JSON, with the fds
                 the setup child needs (report pipe, go pipe, stdout, stderr, exit status file)
                 via SCM_RIGHTS. S runs process.run_setup_child; its init (clone(CLONE_PARENT)
                 again) is also a child of the runtime process.
        runtime → F: "next" for each spare taken: F clones the next one meanwhile.

So a start neither waits for a clone of F nor for S's preparation, nor for F to wake up.
F exits when the runtime's end of their socket pair is shut down or closed: Runtime.close(),
garbage collection of its runtime, or the runtime process ending in any way (the kernel closes
the socket). On a shutdown the runtime reads F's last announcements until F exits, then closes
the spares' sockets (a spare then exits by itself) and kills and reaps the spares. F holds no
fds of the runtime. If F cannot be started or fails, spawn falls back to a local fork.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["ForkServer", "launch_from_json", "launch_to_json", "serve"]

_MAX_MESSAGE = 1 << 22  # a Launch as JSON (argv, env, paths); SEQPACKET keeps message bounds
_FDS_PER_REQUEST = 5  # report pipe, go pipe, stdout, stderr, exit status file
_PACKAGE_DIR = Path(__file__).resolve().parent
# Runs in the server: load runtime.process without runtime/__init__ (which imports the whole
# runtime: images, oci, tarfile...), then serve on fd argv[2].
_BOOT = (
    "import sys, types\n"
    "pkg = types.ModuleType('runtime'); pkg.__path__ = [sys.argv[1]]; sys.modules['runtime'] = pkg\n"
    "sys.path.insert(0, sys.argv[1].rsplit('/', 1)[0])\n"
    "from runtime.forkserver import serve\n"
    "serve(int(sys.argv[2]))\n"
)
SERVER_TITLE = "netsim-forkserver"
# A request like a real one, parsed by each spare while it waits: the parse allocates from the
# same memory pools and touches the same code as its real request will, so the copy-on-write
# page faults (~90, 0.3-0.7 ms) happen ahead of time rather than on the request's path.
_SAMPLE = json.dumps({
    "argv": ["sh", "-c", "true"], "env": {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                         "HOSTNAME": "sample", "HOME": "/root", "TERM": "xterm"},
    "workdir": "/", "hostname": "sample", "rootfs": "/run/netsim/labs/sample/runtime/sample/rootfs",
    "stdout_path": "/run/netsim/labs/sample/runtime/sample/stdout.log",
    "stderr_path": "/run/netsim/labs/sample/runtime/sample/stderr.log",
    "exit_path": "/run/netsim/labs/sample/runtime/sample/exit_status", "netns": "/run/netns/netsim-sample-c-sample",
    "sysctls": {"net.ipv4.ping_group_range": "0 2147483647"}, "idmap": [0, 100000, 65536], "caps": 2818844155,
    "binds": [],
}).encode()  # fmt: skip


def launch_to_json(launch: Any) -> bytes:
    """A process.Launch as JSON bytes (plain data only)."""
    idmap = launch.idmap
    return json.dumps({
        "argv": list(launch.argv), "env": dict(launch.env), "workdir": launch.workdir,
        "hostname": launch.hostname, "rootfs": launch.rootfs, "stdout_path": launch.stdout_path,
        "stderr_path": launch.stderr_path, "exit_path": launch.exit_path, "netns": launch.netns,
        "sysctls": dict(launch.sysctls),
        "idmap": None if idmap is None else [idmap.inside, idmap.outside, idmap.size],
        "caps": launch.caps, "binds": list(launch.binds),
    }).encode()  # fmt: skip


def launch_from_json(data: bytes) -> Any:
    """Inverse of launch_to_json."""
    from runtime.process import Launch
    from runtime.spec import IdMap

    d = json.loads(data)
    d["argv"], d["binds"] = tuple(d["argv"]), tuple(d["binds"])
    d["idmap"] = None if d["idmap"] is None else IdMap(*d["idmap"])
    return Launch(**d)


class ForkServer:
    """The runtime's handle on one fork server (started lazily, thread-safe, restartable)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._spares: collections.deque[tuple[int, socket.socket]] = collections.deque()
        self._failed = False
        self._finalizer: weakref.finalize[Any, ForkServer] | None = None

    @property
    def pid(self) -> int | None:
        """pid of the server process while it runs."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> bool:
        """Start the server if it is not running (returns at once: it imports in the background).
        False if it cannot be started (callers then fork locally)."""
        with self._lock:
            return self._start_locked()

    def _start_locked(self) -> bool:
        if self._sock is not None:
            return True
        if self._failed:
            return False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-S", "-I", "-c", _BOOT, str(_PACKAGE_DIR), str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, cwd="/", start_new_session=True, close_fds=True,
            )  # fmt: skip
        except OSError:
            ours.close()
            self._failed = True
            return False
        finally:
            theirs.close()
        self._sock = ours
        self._spares = collections.deque()
        self._finalizer = weakref.finalize(self, _shutdown, ours, self._proc, self._spares)
        return True

    def clone_setup(self, launch: Any, fds: Sequence[int]) -> int:
        """Hand the request to a spare setup child (a child of this process), which then runs
        process.run_setup_child(launch, *fds); its pid. Raises OSError when the server is
        unusable."""
        message = launch_to_json(launch)
        with self._lock:
            if not self._start_locked():
                raise OSError("fork server unavailable")
            for _attempt in range(3):  # a spare that died meanwhile is replaced
                pid, channel = self._take_spare_locked()
                try:
                    socket.send_fds(channel, [message], list(fds))
                    delivered = True
                except OSError:
                    delivered = False
                finally:
                    channel.close()
                self._replenish_locked()  # once the request is on its way: the clone competes less
                if delivered:
                    return pid
                _reap(pid)
        raise OSError("fork server: its setup children die before their request")

    def _take_spare_locked(self) -> tuple[int, socket.socket]:
        sock = self._sock
        assert sock is not None
        try:
            while not self._spares:
                error = _receive(sock, self._spares)
                if error is not None:
                    self._replenish_locked()  # try again for a later request
                    raise OSError(f"fork server: {error}")
        except OSError:
            self._close_locked()
            raise
        return self._spares.popleft()

    def _replenish_locked(self) -> None:
        """Ask for the next spare. A server gone now is noticed by the next request."""
        if self._sock is None:
            return
        try:
            self._sock.send(b"next")
        except OSError:
            self._close_locked()

    def close(self) -> None:
        """Stop the server and its spares. Running containers are not affected."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._sock, self._proc = None, None


def _receive(sock: socket.socket, spares: collections.deque[tuple[int, socket.socket]]) -> str | None:
    """Read one announcement of the server into `spares`; its error text, if it is one."""
    data, fds, _flags, _addr = socket.recv_fds(sock, 4096, 1)
    channels = [socket.socket(fileno=fd) for fd in fds]
    for channel in channels:
        channel.set_inheritable(False)  # received fds are inheritable
    if not data:
        raise OSError("fork server exited")
    try:
        message = json.loads(data)
        if "error" in message:
            return str(message["error"])
        spares.append((int(message["spare"]), channels.pop()))
        return None
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise OSError(f"fork server: bad message {data[:80]!r}") from exc
    finally:
        for channel in channels:
            channel.close()


def _reap(pid: int) -> None:
    """Kill and reap a spare setup child (our child: its pid cannot have been reused)."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _shutdown(sock: socket.socket, proc: subprocess.Popen[bytes],
              spares: collections.deque[tuple[int, socket.socket]]) -> None:
    try:  # the server sees EOF and exits; take what it announced until then
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5)
        while True:
            _receive(sock, spares)
    except OSError:  # EOF (the server exited), timeout, or it was gone already
        pass
    sock.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    while spares:
        pid, channel = spares.popleft()
        channel.close()
        _reap(pid)


# ---- server side ----------------------------------------------------------------------------


def serve(fd: int) -> None:  # pragma: no cover - runs in the fork server
    """Clone a spare setup child at start and for each "next" on socket `fd`, announcing each
    (with its socket) to the runtime, until EOF; then exit."""
    import gc

    from runtime import namespaces as ns
    from runtime import process

    # Blocked for good: the setup children inherit the mask (process.run_setup_child expects
    # it), and the server leaves only on EOF (the runtime gone) or SIGKILL.
    signal.pthread_sigmask(signal.SIG_BLOCK, process.ASYNC_SIGNALS)
    for sig in process.ASYNC_SIGNALS:  # default dispositions: the setup children need not reset any
        signal.signal(sig, signal.SIG_DFL)
    try:
        ns.set_cmdline(SERVER_TITLE)  # also caches the argv area for the inits' set_cmdline
    except OSError:
        pass
    # The clones of spares run while containers start: give way to them. The server is alone in
    # its session, so in its own scheduling autogroup (where the kernel has them): that group's
    # nice value, not the processes', decides its share. A spare leaves the group with setsid()
    # when its request comes (process.run_setup_child): containers never run niced.
    try:
        with open("/proc/self/autogroup", "w") as fh:
            fh.write("10")
    except OSError:
        pass
    sock = socket.socket(fileno=fd)
    gc.collect()
    gc.freeze()  # children never touch the imported objects' GC headers (less copy-on-write)
    gc.disable()

    def announce() -> bool:
        """Clone a spare and hand its socket to the runtime; False when the runtime is gone."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = ns.clone_parent()
        except OSError as exc:
            ours.close()
            theirs.close()
            message: dict[str, object] = {"error": f"cannot clone a setup child: {exc}"}
            fds: list[int] = []
        else:
            if pid == 0:
                sock.close()
                ours.close()
                _spare_child(theirs, process)
            theirs.close()
            message, fds = {"spare": pid}, [ours.fileno()]
        try:
            socket.send_fds(sock, [json.dumps(message).encode()], fds)
        except OSError:
            return False  # the spare sees EOF once `ours` is closed, and exits
        finally:
            ours.close()
        return True

    if announce():
        while True:
            try:
                request = sock.recv(64)
            except InterruptedError:
                continue
            except OSError:
                break
            if not request or not announce():
                break
    os._exit(0)


def _spare_child(channel: socket.socket, process: Any) -> None:  # pragma: no cover - a spare
    """A spare setup child: prepare, wait for the request, then be the setup child. Never returns."""
    prepared = process.prepare_setup_child()
    launch_from_json(_SAMPLE)  # warm-up: see _SAMPLE
    try:
        message, fds, _flags, _addr = socket.recv_fds(channel, _MAX_MESSAGE, _FDS_PER_REQUEST)
    except OSError:
        os._exit(0)
    try:
        os.setsid()  # out of the server's low-priority scheduling group at once (see serve)
    except OSError:
        pass  # run_setup_child tries again and reports it
    channel.close()
    if not message or len(fds) != _FDS_PER_REQUEST:
        os._exit(0)  # the runtime went away (or sent a broken request: it sees the report pipe close)
    for f in fds:  # received fds are inheritable: the main process must not keep them
        os.set_inheritable(f, False)
    try:
        launch = launch_from_json(message)
    except Exception as exc:  # noqa: BLE001 - on the report pipe, as any setup failure
        process.run_setup_child(None, fds[0], fds[1], list(fds[2:]), f"request: {exc}")
    process.run_setup_child(launch, fds[0], fds[1], list(fds[2:]), prepared)
    os._exit(126)

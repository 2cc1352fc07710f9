"""A fork server: a small, long-lived helper interpreter that creates containers' setup children.

Forking the caller's interpreter (tens of MB of heap and page tables, threads) costs ~3.4 ms
per container before the child runs, and the PID-1 init — a clone of that child — carries the
same address space. The fork server is a fresh `python -S -I` that imports only runtime.process
and its few dependencies (runtime/__init__ and everything netsim is skipped): ~16 MB, single
threaded, so a clone of it is much cheaper.

    runtime process ──Popen──► fork server F (child of the runtime, started once per Runtime,
                                  on first use; it blocks every asynchronous signal)
        request: SOCK_SEQPACKET message = the Launch as JSON, with the fds the setup child needs
                 (report pipe, go pipe, stdout, stderr, exit status file) via SCM_RIGHTS
        F: clone(CLONE_PARENT) ──► setup child S, a child of the *runtime* process (so the
                 runtime waits for it and moves it into the cgroup exactly as with a local fork);
                 S runs process._setup_child unchanged, its init (clone(CLONE_PARENT) again) is
                 also a child of the runtime process.
        reply:   "<pid of S>" or "F <error>"

F exits when the runtime's end of the socket pair closes: Runtime.close(), garbage collection of
its runtime, or the runtime process ending in any way (the kernel closes the socket). It holds
no other fds of the runtime. If F cannot be started or fails, spawn falls back to a local fork.
"""
from __future__ import annotations

import json
import os
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
_FDS_PER_REQUEST = 5
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
        self._finalizer = weakref.finalize(self, _shutdown, ours, self._proc)
        return True

    def clone_setup(self, launch: Any, fds: Sequence[int]) -> int:
        """Have the server clone a setup child (a child of this process) running
        process._setup_child(launch, *fds). Raises OSError when the server is unusable."""
        message = launch_to_json(launch)
        with self._lock:
            if not self._start_locked():
                raise OSError("fork server unavailable")
            assert self._sock is not None
            try:
                socket.send_fds(self._sock, [message], list(fds))
                reply = self._sock.recv(4096)
            except OSError:
                self._close_locked()
                raise
            if not reply:
                self._close_locked()
                raise OSError("fork server exited")
        text = reply.decode("utf-8", "replace")
        if text.startswith("F "):
            raise OSError(f"fork server: {text[2:]}")
        return int(text)

    def close(self) -> None:
        """Stop the server (it exits on EOF) and reap it. Running containers are not affected."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._sock, self._proc = None, None


def _shutdown(sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
    sock.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---- server side ----------------------------------------------------------------------------


def serve(fd: int) -> None:  # pragma: no cover - runs in the fork server
    """Answer clone requests on socket `fd` until EOF, then exit."""
    import gc
    import signal

    from runtime import namespaces as ns
    from runtime import process

    # Blocked for good: the setup child inherits the mask (process._setup_child expects it), and
    # the server leaves only on EOF (the runtime gone) or SIGKILL.
    signal.pthread_sigmask(signal.SIG_BLOCK, process.ASYNC_SIGNALS)
    try:
        ns.set_cmdline(SERVER_TITLE)
    except OSError:
        pass
    sock = socket.socket(fileno=fd)
    gc.collect()
    gc.freeze()  # children never touch the imported objects' GC headers (less copy-on-write)
    gc.disable()
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, _FDS_PER_REQUEST)
        except InterruptedError:
            continue
        except OSError:
            break
        if not message:
            break
        for f in fds:  # received fds are inheritable: the main process must not keep them
            os.set_inheritable(f, False)
        try:
            if len(fds) != _FDS_PER_REQUEST:
                raise ValueError(f"expected {_FDS_PER_REQUEST} fds, got {len(fds)}")
            launch = launch_from_json(message)
            pid = ns.clone_parent()
        except Exception as exc:  # noqa: BLE001 - report it, keep serving
            for f in fds:
                os.close(f)
            sock.send(f"F {exc}".encode("utf-8", "replace"))
            continue
        if pid == 0:
            sock.close()
            process.setup_child(launch, fds[0], fds[1], list(fds[2:]))
        for f in fds:
            os.close(f)
        sock.send(str(pid).encode())
    os._exit(0)

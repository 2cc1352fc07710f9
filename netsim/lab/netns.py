"""Named network namespaces (under /run/netns) and writing per-namespace sysctls."""
from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path

from ..errors import LabError

__all__ = ["NETNS_DIR", "netns_path", "create", "attach", "remove", "exists", "write_sysctls"]

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_MS_BIND, _MS_REC, _MS_SHARED, _MNT_DETACH = 4096, 16384, 1 << 20, 2


def netns_path(name: str) -> str:
    return str(NETNS_DIR / name)


def _in_child(work: Callable[[], str]) -> str:
    """Run `work` in a forked child and return its error text ('' on success).

    Signals are blocked across fork() and reset to their defaults in the child, so a Ctrl-C
    or SIGTERM can never run the parent's Python handlers in the child and unwind into the
    caller's code; the child always leaves by os._exit()."""
    r, w = os.pipe()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                os.close(r)
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                msg = work().encode()
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                msg = f"{type(e).__name__}: {e}".encode()
            finally:
                try:
                    os.write(w, msg)
                finally:
                    os._exit(0)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        err = f.read().decode()
    os.waitpid(pid, 0)
    return err


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


_LIBC = ctypes.CDLL(None, use_errno=True)  # bound once: a CDLL per call costs ~0.1 ms and leaves cyclic garbage


def _libc() -> ctypes.CDLL:
    return _LIBC


def _shared_netns_dir(libc: ctypes.CDLL) -> None:
    """/run/netns must be a shared mount so bind mounts made there show in every mount
    namespace (what `ip netns add` does): make it shared, binding it onto itself first if it is
    not a mount point yet."""
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    d = str(NETNS_DIR).encode()
    if libc.mount(b"none", d, None, _MS_SHARED | _MS_REC, None) == 0:
        return
    if libc.mount(d, d, b"none", _MS_BIND | _MS_REC, None) != 0:
        raise LabError(f"cannot bind-mount {NETNS_DIR}: {os.strerror(ctypes.get_errno())}")
    if libc.mount(b"none", d, None, _MS_SHARED | _MS_REC, None) != 0:
        raise LabError(f"cannot make {NETNS_DIR} shared: {os.strerror(ctypes.get_errno())}")


def _mount_point(name: str) -> tuple[ctypes.CDLL, Path]:
    """The empty file /run/netns/NAME a namespace is bind-mounted on (the name must be free)."""
    if exists(name):
        raise LabError(f"network namespace {name} already exists: is a lab of the same name "
                       "running? (`netsim ps`, `netsim down LAB`)")
    libc = _libc()
    _shared_netns_dir(libc)
    target = NETNS_DIR / name
    os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    return libc, target


def create(name: str) -> None:
    """A new network namespace bind-mounted at /run/netns/NAME (a forked child unshares and
    the mount keeps the namespace alive after it exits)."""
    libc, target = _mount_point(name)
    def work() -> str:
        if libc.unshare(_CLONE_NEWNET) != 0:
            return f"unshare: {os.strerror(ctypes.get_errno())}"
        if libc.mount(b"/proc/self/ns/net", str(target).encode(), b"none", _MS_BIND, None) != 0:
            return f"bind mount: {os.strerror(ctypes.get_errno())}"
        return ""
    err = _in_child(work)
    if err:
        target.unlink(missing_ok=True)
        raise LabError(f"cannot create network namespace {name}: {err}")


def attach(name: str, pid: int) -> None:
    """Name the network namespace of a running process (`ip netns attach NAME PID`): a bind
    mount of /proc/PID/ns/net at /run/netns/NAME, removed by `remove` like any other."""
    libc, target = _mount_point(name)
    if libc.mount(f"/proc/{pid}/ns/net".encode(), str(target).encode(), b"none", _MS_BIND, None) != 0:
        err = os.strerror(ctypes.get_errno())
        target.unlink(missing_ok=True)
        raise LabError(f"cannot name the network namespace of pid {pid} {name}: {err}")


def remove(name: str) -> None:
    """Idempotent: a namespace that is already gone counts as removed."""
    target = NETNS_DIR / name
    if not target.exists():
        return
    if _libc().umount2(str(target).encode(), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # EINVAL: not mounted (a torn create); ENOENT: gone
            raise LabError(f"cannot unmount network namespace {name}: {os.strerror(err)}")
    try:
        target.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise LabError(f"cannot remove network namespace {name}: {e}") from None


def write_sysctls(name: str, values: Mapping[str, str]) -> None:
    """Write net.* sysctls inside a namespace: /proc/sys/net reflects the writer's namespace, so
    a forked child joins it first (no subprocess, no exec)."""
    libc = _libc()

    def work() -> str:
        fd = os.open(netns_path(name), os.O_RDONLY)
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            return f"setns: {os.strerror(ctypes.get_errno())}"
        for key, value in values.items():
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(str(value))
        return ""
    err = _in_child(work)
    if err:
        raise LabError(f"netns {name}: cannot set sysctls {dict(values)}: {err}")

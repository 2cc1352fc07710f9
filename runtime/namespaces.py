"""Thin, typed wrappers over the libc calls Python 3.11 lacks: unshare, setns, mount, pivot_root, clone.

Every wrapper raises OSError (with errno and the object involved) on failure. The ctypes
handles below are bound once at import and never change (constants, not state).
"""
from __future__ import annotations

import ctypes
import errno as _errno
import fcntl
import functools
import os
import socket
import struct
from collections.abc import Mapping
from typing import Final

__all__ = [
    "CLONE_NEWCGROUP",
    "CLONE_NEWIPC",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWUSER",
    "CLONE_NEWUTS",
    "CLONE_PARENT",
    "MNT_DETACH",
    "MS_BIND",
    "MS_NODEV",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_RDONLY",
    "MS_REC",
    "MS_REMOUNT",
    "MS_STRICTATIME",
    "clone_parent",
    "clone_vm_parent",
    "join_netns",
    "loopback_up",
    "mount",
    "pivot_root",
    "set_cmdline",
    "set_dumpable",
    "set_parent_death_signal",
    "sethostname",
    "setns",
    "umount2",
    "unshare",
    "write_net_sysctls",
]

CLONE_NEWNS: Final = 0x00020000
CLONE_NEWCGROUP: Final = 0x02000000
CLONE_NEWUTS: Final = 0x04000000
CLONE_NEWIPC: Final = 0x08000000
CLONE_NEWUSER: Final = 0x10000000
CLONE_NEWPID: Final = 0x20000000
CLONE_NEWNET: Final = 0x40000000
CLONE_PARENT: Final = 0x00008000

MS_RDONLY: Final = 1
MS_NOSUID: Final = 2
MS_NODEV: Final = 4
MS_NOEXEC: Final = 8
MS_REMOUNT: Final = 32
MS_BIND: Final = 4096
MS_REC: Final = 16384
MS_PRIVATE: Final = 1 << 18
MS_STRICTATIME: Final = 1 << 24
MNT_DETACH: Final = 2

_SYS_CLONE: Final = 56  # x86_64
_SYS_PIVOT_ROOT: Final = 155  # x86_64
_SIGCHLD: Final = 17
_CLONE_VM: Final = 0x00000100
_CLONE_VFORK: Final = 0x00004000
_SIOCGIFFLAGS: Final = 0x8913
_SIOCSIFFLAGS: Final = 0x8914
_IFF_UP: Final = 0x1

if os.uname().machine != "x86_64":  # pragma: no cover - syscall numbers below are x86_64's
    raise ImportError("runtime.namespaces supports x86_64 only (syscall numbers)")

_LIBC: Final = ctypes.CDLL(None, use_errno=True)
# PyDLL keeps the GIL across the call, so a raw clone()'d child resumes holding it.
_LIBC_GIL: Final = ctypes.PyDLL(None, use_errno=True)

_unshare = _LIBC.unshare
_unshare.argtypes = [ctypes.c_int]
_setns = _LIBC.setns
_setns.argtypes = [ctypes.c_int, ctypes.c_int]
_mount = _LIBC.mount
_mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_umount2 = _LIBC.umount2
_umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_sethostname = _LIBC.sethostname
_sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_prctl = _LIBC.prctl
_PR_SET_NAME: Final = 15
_PR_SET_DUMPABLE: Final = 4
_PR_SET_PDEATHSIG: Final = 1
_syscall = _LIBC.syscall
_syscall.restype = ctypes.c_long
_syscall_gil = _LIBC_GIL.syscall
_syscall_gil.restype = ctypes.c_long


def _fs(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def _check(ret: int, what: str, filename: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", filename)
    return ret


def unshare(flags: int) -> None:
    """unshare(2) the namespaces in `flags` (CLONE_NEW*)."""
    _check(_unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2) into the namespace referred to by `fd`."""
    _check(_setns(fd, nstype), f"setns({nstype:#x})")


def join_netns(path: str) -> None:
    """Move the calling thread into the network namespace bound at `path`."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_setns(fd, CLONE_NEWNET), "setns(net)", path)
    finally:
        os.close(fd)


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0, data: str | None = None) -> None:
    """mount(2)."""
    ret = _mount(_fs(source), os.fsencode(target), _fs(fstype), flags, _fs(data))
    _check(ret, f"mount({source!r} on {target!r}, type {fstype!r}, flags {flags:#x}, {data!r})", target)


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_umount2(os.fsencode(target), flags), f"umount2({target!r}, {flags})", target)


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2) (raw syscall: glibc has no wrapper)."""
    ret = _syscall(ctypes.c_long(_SYS_PIVOT_ROOT), ctypes.c_char_p(os.fsencode(new_root)), ctypes.c_char_p(os.fsencode(put_old)))
    _check(ret, f"pivot_root({new_root!r}, {put_old!r})", new_root)


def sethostname(name: str) -> None:
    """sethostname(2) in the calling process's UTS namespace."""
    raw = name.encode()
    _check(_sethostname(raw, len(raw)), f"sethostname({name!r})")


def clone_parent() -> int:
    """fork(), except the child's parent is the caller's parent (CLONE_PARENT).

    Returns 0 in the child and the child's pid in the caller. Like fork() with no new stack.
    The child is a raw clone: glibc's cached thread id is stale there, so it must only make
    plain system calls (os.*), which is all our init does before fork()ing the main process.
    """
    flags = ctypes.c_long(CLONE_PARENT | _SIGCHLD)
    zero = ctypes.c_long(0)
    ret = _syscall_gil(ctypes.c_long(_SYS_CLONE), flags, zero, zero, zero, zero)
    return _check(int(ret), "clone(CLONE_PARENT)")


def clone_vm_parent() -> int:
    """clone(CLONE_PARENT | CLONE_VM | CLONE_VFORK): a child of the caller's parent that runs in
    the caller's memory (no copy of the address space, no copy-on-write faults), while the
    caller stays suspended in this call until the child exits or execs.

    Returns 0 in the child. The caller must never run again: it is to be killed (SIGKILL) once
    the child runs — if it resumed, it would find its memory as the child left it. Like
    clone_parent, the child is a raw clone (see there)."""
    flags = ctypes.c_long(CLONE_PARENT | _CLONE_VM | _CLONE_VFORK | _SIGCHLD)
    zero = ctypes.c_long(0)
    ret = _syscall_gil(ctypes.c_long(_SYS_CLONE), flags, zero, zero, zero, zero)
    return _check(int(ret), "clone(CLONE_PARENT|CLONE_VM|CLONE_VFORK)")


def set_parent_death_signal(sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG): `sig` when the parent (thread) exits."""
    _check(_prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def loopback_up() -> None:
    """Set `lo` up in the calling thread's network namespace (SIOCSIFFLAGS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, req))[1]
        if not flags & _IFF_UP:
            fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def write_net_sysctls(sysctls: Mapping[str, str]) -> None:
    """Write net.* sysctls; /proc/sys/net reflects the calling thread's network namespace."""
    for key, value in sysctls.items():
        rel = key if "/" in key else key.replace(".", "/")
        path = "/proc/sys/" + rel
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise OSError(_errno.ENOENT, f"unknown sysctl {key!r}", path) from None
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)


@functools.cache
def _argv_area() -> tuple[int, int]:
    """(arg_start, arg_end) of this process: stat fields 48 and 49. Cached: a forked child has
    the same area at the same addresses (the fork server looks it up once for all its clones)."""
    with open("/proc/self/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return int(fields[45]), int(fields[46])


def set_cmdline(title: str) -> None:
    """Overwrite the calling process's argv area, so ps shows `title` (like setproctitle)."""
    start, end = _argv_area()
    size = end - start
    if size <= 0:
        return
    raw = title.encode()[: size - 1]
    ctypes.memmove(start, raw + b"\0" * (size - len(raw)), size)
    _prctl(_PR_SET_NAME, ctypes.c_char_p(title.encode()[:15]), 0, 0, 0)  # comm, too


def set_dumpable(dumpable: bool) -> None:
    """prctl(PR_SET_DUMPABLE): whether the process's /proc files belong to its own uid."""
    _check(_prctl(_PR_SET_DUMPABLE, int(dumpable), 0, 0, 0), "prctl(PR_SET_DUMPABLE)")

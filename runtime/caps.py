"""Capabilities and no_new_privs: what every process in a container keeps (Docker's default set).

Only os-level calls through ctypes (safe in forked children). The bounding set is dropped first
(it caps what any later execve may gain), then the effective/permitted/inheritable sets are set
with capset(2) and the ambient set is cleared; no_new_privs stops setuid binaries and file
capabilities from granting more.
"""
from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from typing import Final

from runtime.errors import SpecError

__all__ = [
    "CAP_NUMBERS",
    "DOCKER_DEFAULT_CAPS",
    "cap_mask",
    "capability_set",
    "drop_bounding",
    "drop_to",
    "set_no_new_privs",
]

CAP_NUMBERS: Final = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}  # fmt: skip

# moby/moby oci/caps/defaults.go: CapEff 00000000a80425fb in a default `docker run`.
DOCKER_DEFAULT_CAPS: Final = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)  # fmt: skip

_PR_CAPBSET_DROP: Final = 24
_PR_SET_NO_NEW_PRIVS: Final = 38
_PR_CAP_AMBIENT: Final = 47
_PR_CAP_AMBIENT_CLEAR_ALL: Final = 4
_LINUX_CAPABILITY_VERSION_3: Final = 0x20080522
_SYS_CAPSET: Final = 126  # x86_64

_LIBC: Final = ctypes.CDLL(None, use_errno=True)
_prctl = _LIBC.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_syscall = _LIBC.syscall
_syscall.restype = ctypes.c_long


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def cap_mask(names: Iterable[str]) -> int:
    """The bit mask of capability names (as /proc/PID/status CapEff shows it)."""
    mask = 0
    for name in names:
        mask |= 1 << CAP_NUMBERS[name]
    return mask


def _cap_name(name: str) -> str:
    upper = name.strip().upper()
    return upper[4:] if upper.startswith("CAP_") else upper


def capability_set(add: Iterable[str] = (), drop: Iterable[str] = (),
                   base: Iterable[str] = DOCKER_DEFAULT_CAPS) -> tuple[str, ...]:
    """Docker's --cap-add/--cap-drop: `base` less `drop`, plus `add`; "ALL" names every capability
    (drop ALL, then add what is needed). Names in either case, with or without CAP_. Unknown
    names raise SpecError."""
    adds, drops = [_cap_name(n) for n in add], [_cap_name(n) for n in drop]
    unknown = sorted({n for n in adds + drops if n != "ALL" and n not in CAP_NUMBERS})
    if unknown:
        raise SpecError(f"unknown capabilities {unknown} (names as in capabilities(7), or ALL)")
    caps = set() if "ALL" in drops else set(base) - set(drops)
    caps |= set(CAP_NUMBERS) if "ALL" in adds else set(adds)
    return tuple(sorted(caps, key=CAP_NUMBERS.__getitem__))


def _check(ret: int, what: str) -> None:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _read_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return max(CAP_NUMBERS.values())


_LAST_CAP: Final = _read_last_cap()  # the running kernel's, read once (not in every container's init)


def set_no_new_privs() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS): execve never grants privileges again (setuid, file caps)."""
    _check(_prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def drop_bounding(keep: int) -> None:
    """Drop every capability not in mask `keep` from the bounding set (what any later execve
    may gain); the effective and permitted sets are left alone. Needs CAP_SETPCAP."""
    for cap in range(_LAST_CAP + 1):
        if not keep & (1 << cap):
            _check(_prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0), f"prctl(PR_CAPBSET_DROP, {cap})")


def drop_to(keep: int, bounding: bool = True) -> None:
    """Keep only the capabilities in mask `keep`: bounding set (unless `bounding` is False: the
    caller did drop_bounding(keep) already), effective, permitted; inheritable and ambient
    emptied. Needs CAP_SETPCAP (container root has it until this call)."""
    if bounding:
        drop_bounding(keep)
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # EINVAL on old kernels: nothing to clear
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)(_Data(keep & 0xFFFFFFFF, keep & 0xFFFFFFFF, 0), _Data(keep >> 32, keep >> 32, 0))
    _check(_syscall(ctypes.c_long(_SYS_CAPSET), ctypes.byref(header), data), "capset")

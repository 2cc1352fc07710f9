"""Named network namespaces (under /run/netns) and writing per-namespace sysctls."""
from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from pathlib import Path

from pyroute2 import netns as _netns

from ..errors import LabError

__all__ = ["NETNS_DIR", "netns_path", "create", "remove", "exists", "write_sysctls"]

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000


def netns_path(name: str) -> str:
    return str(NETNS_DIR / name)


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create(name: str) -> None:
    if exists(name):
        raise LabError(f"network namespace {name} already exists: is a lab of the same name "
                       "running? (`netsim ps`, `netsim down LAB`)")
    try:
        _netns.create(name)
    except OSError as e:
        raise LabError(f"cannot create network namespace {name}: {e}") from None


def remove(name: str) -> None:
    """Idempotent: a namespace that is already gone counts as removed."""
    if not exists(name):
        return
    try:
        _netns.remove(name)
    except FileNotFoundError:
        return
    except OSError as e:
        raise LabError(f"cannot remove network namespace {name}: {e}") from None


def write_sysctls(name: str, values: Mapping[str, str]) -> None:
    """Write net.* sysctls inside a namespace: /proc/sys/net reflects the writer's namespace, so
    a forked child joins it first (no subprocess, no exec)."""
    libc = ctypes.CDLL(None, use_errno=True)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: join, write, report
        os.close(r)
        msg = b""
        try:
            fd = os.open(netns_path(name), os.O_RDONLY)
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            for key, value in values.items():
                with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                    f.write(str(value))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            msg = f"{type(e).__name__}: {e}".encode()
        os.write(w, msg)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        err = f.read().decode()
    os.waitpid(pid, 0)
    if err:
        raise LabError(f"netns {name}: cannot set sysctls {dict(values)}: {err}")

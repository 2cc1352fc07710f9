"""A lab-named cgroup subtree in every mounted hierarchy: join one, list and end its processes,
remove it.  Used for what a real dockerd leaves behind — its containerd and shims (which outlive
a killed dockerd) and the containers' cgroups (created by runc in every hierarchy, v1 and v2).

`rel` is a path relative to each hierarchy's root, such as `netsim/LAB/docker`; it always carries
the lab's name, so ending what is in it ends only what the lab started.
"""
from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

__all__ = ["hierarchies", "tracking_dir", "pids", "kill_tree", "remove_tree"]


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def hierarchies(mountinfo: str = "/proc/self/mountinfo") -> list[Path]:
    """Mount points of every cgroup (v1) and cgroup2 hierarchy, one per superblock."""
    out: list[Path] = []
    seen: set[str] = set()
    try:
        text = Path(mountinfo).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or not rfields or rfields[0] not in ("cgroup", "cgroup2"):
            continue
        if fields[2] in seen or fields[3] != "/":  # a bind mount of a sub-cgroup: not a root
            continue
        seen.add(fields[2])
        out.append(Path(_unescape(fields[4])))
    return out


def tracking_dir(rel: str, mountinfo: str = "/proc/self/mountinfo") -> Path:
    """Where to put a process so that its descendants can be found later: the v2 hierarchy
    when it is the only one, else the v1 `pids` hierarchy, else the first mounted."""
    hs = hierarchies(mountinfo)
    if not hs:
        raise OSError(errno.ENOENT, "no cgroup hierarchy is mounted")
    for h in hs:
        if (h / "cgroup.controllers").exists() and len(hs) == 1:
            return h / rel
    for h in hs:
        if h.name == "pids" or "pids" in h.name.split(","):
            return h / rel
    return hs[0] / rel


def _dirs_bottom_up(top: Path) -> list[Path]:
    if not top.is_dir():
        return []
    out = [Path(root) for root, _d, _f in os.walk(top)]
    return sorted(out, key=lambda p: len(p.parts), reverse=True)


def pids(rel: str) -> set[int]:
    found: set[int] = set()
    for h in hierarchies():
        for d in _dirs_bottom_up(h / rel):
            try:
                found.update(int(x) for x in (d / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                pass
    return found


def kill_tree(rel: str, timeout: float = 5.0) -> None:
    """SIGKILL every process in the subtree (in any hierarchy) until none is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = pids(rel)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, os.WNOHANG)  # our own child (dockerd) must be reaped to go
            except ChildProcessError:
                pass
        if time.monotonic() > deadline:
            raise OSError(errno.EBUSY, f"cgroup {rel}: processes {sorted(left)} do not go away")
        time.sleep(0.02)


def remove_tree(rel: str, empty_parents: int = 0, timeout: float = 5.0) -> None:
    """rmdir the subtree in every hierarchy (bottom up), then up to `empty_parents` of its
    parents where they are empty — a parent still used by someone else stays."""
    for h in hierarchies():
        for d in _dirs_bottom_up(h / rel):
            deadline = time.monotonic() + timeout
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise OSError(e.errno, f"rmdir {d}: {os.strerror(e.errno or 0)}") from None
                    time.sleep(0.02)
        parent = (h / rel).parent
        for _ in range(empty_parents):
            if parent == h:
                break
            try:
                parent.rmdir()
            except OSError:
                break  # not empty (another lab), busy or gone: not ours to insist on
            parent = parent.parent

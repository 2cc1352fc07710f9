"""Remove what a lab's ledger says it made — and nothing else — in reverse order, best effort,
one error at the end.  Works from another process and after a crash."""
from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import signal
import time
from pathlib import Path

from ..errors import LabError
from . import cgroup_tree, netns
from .ledger import Ledger, process_start_time

__all__ = ["end_process", "teardown", "list_labs"]

_MNT_DETACH = 2


def end_process(pid: int, start: int | None) -> None:
    if start is None or process_start_time(pid) != start:
        return  # gone, or the pid now belongs to someone else
    for sig, wait in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    return
            except ChildProcessError:
                pass
            if process_start_time(pid) != start:
                return
            time.sleep(0.01)


def _rmdir_retry(path: Path) -> None:
    """rmdir a cgroup, waiting briefly for its tasks to go.  A shared parent (netsim/) that
    still holds another lab's cgroups is not ours to remove: it is left alone."""
    if path.is_dir() and any(p.is_dir() for p in path.iterdir()):
        return
    for _ in range(100):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            time.sleep(0.01)
    path.rmdir()


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY):
            raise


def teardown(lab_dir: Path) -> None:
    ledger = Ledger(lab_dir / "ledger.jsonl")
    errors: list[str] = []
    libc = ctypes.CDLL(None, use_errno=True)
    for e in reversed(ledger.entries()):
        try:
            if e.kind == "process":
                end_process(int(e.ident), e.extra.get("start"))
            elif e.kind == "container":
                from runtime import Runtime
                rt = Runtime(Path(e.extra["state_dir"]))
                try:
                    rt.get(e.ident).delete()
                except Exception as exc:  # noqa: BLE001 - state may be gone; the rest follows
                    if (Path(e.extra["state_dir"]) / e.ident).exists():
                        errors.append(f"container {e.ident}: {exc}")
            elif e.kind == "mount":
                if libc.umount2(e.ident.encode(), _MNT_DETACH) != 0:
                    err = ctypes.get_errno()
                    if err not in (errno.EINVAL, errno.ENOENT):
                        errors.append(f"umount {e.ident}: {os.strerror(err)}")
            elif e.kind == "cgroup":
                _rmdir_retry(Path(e.ident))
            elif e.kind == "cgroup-tree":  # a lab-named subtree in every hierarchy (docker engine)
                cgroup_tree.kill_tree(e.ident)
                cgroup_tree.remove_tree(e.ident, empty_parents=int(e.extra.get("empty_parents", 0)))
            elif e.kind == "rmdir":  # a directory we made that others may fill: only if empty
                _rmdir_if_empty(Path(e.ident))
            elif e.kind == "netns":
                netns.remove(e.ident)
            elif e.kind == "dir" and Path(e.ident) != lab_dir:
                shutil.rmtree(e.ident, ignore_errors=True)
        except Exception as exc:  # noqa: BLE001 - collect, go on, raise one error at the end
            errors.append(f"{e.kind} {e.ident}: {exc}")
    if errors:
        raise LabError("teardown: " + "; ".join(errors))
    shutil.rmtree(lab_dir, ignore_errors=True)


def list_labs(root: Path) -> list[dict[str, object]]:
    out = []
    for d in sorted((root / "labs").glob("*")) if (root / "labs").exists() else []:
        info: dict[str, object] = {"name": d.name, "dir": str(d)}
        try:
            info.update(json.loads((d / "lab.json").read_text()))
        except (OSError, json.JSONDecodeError):
            pass
        owner = info.get("owner_pid")
        info["owner_alive"] = isinstance(owner, int) and process_start_time(owner) is not None
        out.append(info)
    return out

"""On-disk container state (state_dir/<name>/state.json), so another process can manage it.

Layout of state_dir/<name>/ (a tmpfs of its own when the state dir is not on tmpfs already,
see rootfs.mount_container_dir):
  state.json    this record (atomically replaced)
  rootfs/       overlay mount point      upper/ work/   overlay dirs
  stdout.log    stderr.log               main process output
  exit_status   written by the init just before it exits: the main process's exit code
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from runtime.errors import ContainerError, SpecError
from runtime.spec import ContainerSpec, spec_from_dict, spec_to_dict

__all__ = ["ContainerPaths", "ContainerState", "StateStamp", "load_state", "load_state_if_changed", "proc_alive",
           "proc_start_time", "save_state"]

STATE_FILE = "state.json"


@dataclass(frozen=True)
class ContainerPaths:
    """Files and directories of one container's state dir."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def upper(self) -> Path:
        return self.root / "upper"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def stdout(self) -> Path:
        return self.root / "stdout.log"

    @property
    def stderr(self) -> Path:
        return self.root / "stderr.log"

    @property
    def exit_status(self) -> Path:
        return self.root / "exit_status"


@dataclass
class ContainerState:
    """What survives the process that created the container."""

    spec: ContainerSpec
    image: str  # path of the lower dir
    binds: list[str] = field(default_factory=list)  # host dirs bound read-only (relative names, e.g. "usr")
    image_config: dict[str, Any] = field(default_factory=dict)  # runtime.oci.ImageConfig.to_dict()
    cgroups: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    pid: int | None = None
    pid_start: int | None = None  # /proc/<pid>/stat starttime, to detect pid reuse
    status: str = "created"
    exit_code: int | None = None
    created_at: float = 0.0

    def to_json(self) -> str:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["spec"] = spec_to_dict(self.spec)
        return json.dumps(data, sort_keys=True)  # no indent: the C encoder, several times faster

    @classmethod
    def from_json(cls, text: str) -> ContainerState:
        data = json.loads(text)
        data["spec"] = spec_from_dict(data["spec"])
        return cls(**data)


# One version of a state file: a save writes a new file over the old one, so its inode changes
# with every save. The state file is always on a tmpfs (the state dir, or the container's own
# tmpfs: rootfs.mount_container_dir), whose inode numbers only grow.
StateStamp = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns


def _stamp(st: os.stat_result) -> StateStamp:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def save_state(path: Path, state: ContainerState) -> StateStamp:
    """Write state.json atomically (temp file + rename); the new version's stamp."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    data = state.to_json().encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        stamp = _stamp(os.fstat(fd))
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return stamp


def load_state(path: Path) -> ContainerState:
    state, _stamp = load_state_if_changed(path, None)
    assert state is not None
    return state


def load_state_if_changed(path: Path, known: StateStamp | None) -> tuple[ContainerState | None, StateStamp]:
    """The state at `path` and its stamp; None for the state when its stamp is `known` (the
    version the caller holds: no need to parse it again)."""
    try:
        with open(path, "rb") as fh:
            stamp = _stamp(os.fstat(fh.fileno()))
            if stamp == known:
                return None, stamp
            text = fh.read()
        return ContainerState.from_json(text.decode()), stamp
    except FileNotFoundError:
        raise ContainerError(f"no container state at {path}") from None
    except (OSError, ValueError, TypeError, KeyError, SpecError) as exc:
        raise ContainerError(f"unreadable container state {path}: {exc}") from exc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    return raw[raw.rindex(")") + 2 :].split()


def proc_start_time(pid: int) -> int | None:
    """starttime (clock ticks since boot) of `pid`, None if it does not exist."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def proc_alive(pid: int, start: int | None) -> bool:
    """True when `pid` is the same process (same start time) and has not exited (not a zombie)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start is None or int(fields[19]) == start

"""A lab's ledger: every kernel object is written here *before* it is created, so teardown
(also after a crash, by another process) removes exactly what the lab made and nothing else.

State lives under /run/netsim/labs/<lab>/ (tmpfs: gone after a reboot, as the objects are).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Ledger", "Entry", "STATE_ROOT", "lab_dir", "process_start_time"]

STATE_ROOT = Path(os.environ.get("NETSIM_STATE_ROOT", "/run/netsim"))


def lab_dir(lab: str, root: Path | None = None) -> Path:
    return (root or STATE_ROOT) / "labs" / lab


def existing_lab_dir(lab: str) -> Path:
    """The directory of a lab this machine's netsim made; UsageError (exit 2) when there is none."""
    from ..errors import UsageError
    d = lab_dir(lab)
    if "/" in lab or not (d / "ledger.jsonl").exists() or not (d / "lab.json").exists():
        raise UsageError(f"no lab {lab!r} (`netsim ps` lists the labs)")
    return d


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: tells a process from a later one that reused its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class Entry:
    kind: str        # netns | process | container | cgroup | cgroup-tree | mount | dir | rmdir
    ident: str       # netns name, pid, container name, path
    extra: dict[str, Any]


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, kind: str, ident: str | int, **extra: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"kind": kind, "ident": str(ident), **extra})
        with self.path.open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def entries(self) -> list[Entry]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line after a crash
            kind, ident = d.pop("kind"), d.pop("ident")
            out.append(Entry(kind, ident, d))
        return out

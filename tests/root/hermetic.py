"""Snapshots of the machine's root namespace and cgroup tree, to prove a test left them as before."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout


def _cgroup_dirs() -> list[str]:
    out = []
    base = Path("/sys/fs/cgroup")
    for root, dirs, _files in os.walk(base):
        # only the netsim subtrees: the rest of the machine changes on its own
        rel = os.path.relpath(root, base)
        if "netsim" in rel.split(os.sep):
            out.append(rel)
        dirs[:] = [d for d in dirs if d == "netsim" or "netsim" in rel.split(os.sep)
                   or rel == "." or rel.count(os.sep) == 0]
    return sorted(out)


def snapshot() -> dict[str, object]:
    return {
        "links": sorted(ln.split(":", 2)[1].split("@")[0].strip()
                        for ln in _run(["ip", "-o", "link"]).splitlines()),
        "routes": _run(["ip", "route", "show", "table", "all"]),
        "rules": _run(["ip", "rule"]),
        "iptables": [ln for ln in _run(["iptables-save"]).splitlines() if not ln.startswith("#")
                     and not ln.startswith(":")],
        "netns": sorted(n for n in os.listdir("/run/netns") if n.startswith("netsim-"))
        if os.path.isdir("/run/netns") else [],
        "cgroups": _cgroup_dirs(),
        "mounts": sorted(ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                         if "netsim" in ln),
    }

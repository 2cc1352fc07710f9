"""Run a scenario step: the sender sends, we keep what it saw.

A container sends with its own busybox tools, inside the container (nc for TCP and HTTP, ping).
Busybox has no UDP client and its nc cannot choose a source port, so a container's `udp` step,
and any step with a fixed `sport`, runs netsim's probe in the container's network namespace
instead (the packets on the wire are the same; the step result records `where`).  External
hosts always use the probe (netsim/probes/netprobe.py) in their namespace.
"""
from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from ..scenario.loader import split_endpoint
from ..scenario.schema import Step
from .command import in_netns, run

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["StepResult", "run_step"]

_YOU_ARE = re.compile(r"you are (\d+\.\d+\.\d+\.\d+:\d+)")


@dataclass(frozen=True)
class StepResult:
    name: str
    ok: bool                     # the sender got a reply
    started: float
    ended: float
    argv: list[str]
    returncode: int
    output: str
    seen_as: str | None = None   # the sender's address as the server reported it ("you are ...")
    detail: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def in_container(st: Step, containers: Collection[str]) -> bool:
    """Whether busybox inside the container can carry the step out."""
    return st.from_ in containers and st.send != "udp" and st.sport is None


def _busybox_argv(st: Step, ip: str, port: int | None) -> list[str]:
    t = str(max(1, int(st.timeout)))
    if st.send == "http_get":
        # (not wget -T: busybox 1.35 wget segfaults with -T, also on the host; busybox timeout
        # ends it instead, so a step without an answer fails rather than hangs)
        return ["timeout", t, "wget", "-q", "-O", "-", f"http://{ip}:{port}/"]
    if st.send == "tcp_connect":
        return ["timeout", t, "sh", "-c", f"nc -w {t} {ip} {port} </dev/null"]
    if st.send == "ping":
        return ["ping", "-c", str(st.count), "-W", t, ip]
    raise ValueError(st.send)


def _probe_argv(st: Step, ip: str, port: int | None) -> list[str]:
    if st.send == "ping":
        return ["busybox", "ping", "-c", str(st.count), "-W", str(max(1, int(st.timeout))), ip]
    argv = [sys.executable, "-m", "netsim.probes.netprobe", st.send, ip, str(port),
            "--timeout", str(st.timeout)]
    if st.sport:
        argv += ["--sport", str(st.sport)]
    if st.send == "udp":
        argv += ["--count", str(st.count), "--payload", st.payload]
    return argv


def run_step(lab: "Lab", st: Step) -> StepResult:
    target, port = split_endpoint(st.to)
    ip = str(lab.plan.address_of(target))
    t0 = time.time()
    budget = st.timeout * max(1, st.count if st.send in ("ping", "udp") else 1) + 5
    if in_container(st, [c.name for c in lab.scenario.containers]):
        argv = _busybox_argv(st, ip, port)
        r = lab.engine.exec(st.from_, argv, timeout=budget)
        rc, out = r.returncode, r.stdout + r.stderr
        ok = rc == 0
        detail: dict[str, object] = {"where": "container"}
    else:
        argv = in_netns(lab.netns_path(st.from_), _probe_argv(st, ip, port))
        p = run(argv, timeout=budget, check=False)
        rc, out = p.returncode, p.stdout + p.stderr
        detail = {"where": "netns"}
        try:
            detail.update(json.loads(p.stdout.strip().splitlines()[-1]))
        except (json.JSONDecodeError, IndexError):
            pass
        ok = rc == 0 if st.send == "ping" else bool(detail.get("ok"))
    m = _YOU_ARE.search(out)
    return StepResult(st.name, ok, t0, time.time(), argv, rc, out[-2000:],
                      m.group(1) if m else None, detail)

"""Link impairments at a link's egress: rate with tc tbf, random loss with iptables' statistic
match (this kernel family may lack sch_netem and act_gact), delay/jitter with tc netem where the
kernel has it, else with netsim's netfilter-queue delayer.  Each link is impaired in a namespace
the lab owns, whatever the engine:

  nic       the Docker host's uplink: egress of the host's NIC and of the router's side of it
  wan       the home router's public side (both ways)
  CONTAINER the container's eth0 (both ways: inside its namespace and its veth on the bridge)

Without sch_netem, delay and jitter are applied at the link's routed end (host NIC, router WAN,
container eth0), both ways: mangle POSTROUTING -o IFACE and PREROUTING -i IFACE send the packets
to an NFQUEUE (with --queue-bypass: never a black hole), where `netsim.probes.delayq` holds each
one for delay ± jitter (uniform, as netem's default) before accepting it.  The same delay per
direction as netem at both ends' egress; IP packets only (ARP is not delayed).  The delayer is a
process of the lab (ledger, ended by its pid when the link changes or the lab goes).
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import LabError
from ..scenario.schema import Link, time_ms
from .command import in_netns, run
from .ledger import process_start_time
from .netns import netns_path
from .teardown import end_process

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["Endpoint", "link_endpoints", "apply_link", "clear_link", "describe"]


@dataclass(frozen=True)
class Endpoint:
    netns: str       # namespace name
    iface: str


def link_endpoints(lab: "Lab", at: str) -> list[Endpoint]:
    """Both ends of a link, each where its egress is."""
    n = lab.names
    if at == "nic":
        far = (n.home, "lan-host") if lab.plan.home else (n.upstream, "host0")
        return [Endpoint(n.host, lab.plan.nic), Endpoint(*far)]
    if at == "wan":
        return [Endpoint(n.home, "wan0"), Endpoint(n.upstream, "host0")]
    if at in lab.plan.containers:
        veth = lab.interfaces().get(lab.plan.containers[at].veth, lab.plan.containers[at].veth)
        return [Endpoint(n.container(at), "eth0"), Endpoint(n.host, veth)]
    raise LabError(f"unknown link {at!r}")


def _tc(ep: Endpoint, *args: str) -> None:
    run(in_netns(netns_path(ep.netns), ["tc", *args]))


def _loss_rules(lab: "Lab", ep: Endpoint, loss: float) -> list[list[str]]:
    """Random drops both ways at a routed interface: its egress (mangle POSTROUTING) and its
    ingress (raw PREROUTING).  Bridge ports are avoided: iptables sees the bridge there."""
    stat = ["-m", "statistic", "--mode", "random", "--probability", f"{loss / 100:.6f}",
            "-m", "comment", "--comment", f"netsim:{lab.name}:loss", "-j", "DROP"]
    return [["iptables", "-w", "-t", "mangle", "-A", "POSTROUTING", "-o", ep.iface, *stat],
            ["iptables", "-w", "-t", "raw", "-A", "PREROUTING", "-i", ep.iface, *stat]]


DELAY_QUEUE = 100   # the NFQUEUE number; queues are per network namespace, one link per namespace


def _stop_delayer(lab: "Lab", at: str) -> None:
    """End the link's delayer by its pid (checked against its start time), if one runs."""
    path = lab.dir / "impair" / f"{at}.delayq.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    end_process(int(info["pid"]), info.get("start"))   # SIGTERM, SIGKILL; only if still ours
    path.unlink(missing_ok=True)


def _start_delayer(lab: "Lab", link: Link, ep: Endpoint) -> None:
    """netsim.probes.delayq in the endpoint's namespace, then the rules that feed it."""
    assert link.delay is not None
    argv = in_netns(netns_path(ep.netns), [sys.executable, "-m", "netsim.probes.delayq", "--queue",
                                           str(DELAY_QUEUE), "--delay-ms", str(time_ms(link.delay)),
                                           "--jitter-ms", str(time_ms(link.jitter) if link.jitter else 0.0)])
    log = lab.dir / "impair" / f"{link.at}.delayq.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    what = f"delayq-{link.at}"
    lab.ledger.record("process-intent", what)
    with log.open("ab") as out:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    start = process_start_time(p.pid)
    lab.ledger.record("process", p.pid, start=start, what=what)
    (lab.dir / "impair" / f"{link.at}.delayq.json").write_text(json.dumps({"pid": p.pid, "start": start}))
    deadline = time.monotonic() + 10
    while b'"ready"' not in log.read_bytes()[-4096:]:
        if p.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            _stop_delayer(lab, link.at)
            raise LabError(f"link {link.at}: the delayer did not start: {tail[0]}")
        time.sleep(0.01)
    tag = ["-m", "comment", "--comment", f"netsim:{lab.name}:delay", "-j", "NFQUEUE",
           "--queue-num", str(DELAY_QUEUE), "--queue-bypass"]
    for argv in (["iptables", "-w", "-t", "mangle", "-A", "POSTROUTING", "-o", ep.iface, *tag],
                 ["iptables", "-w", "-t", "mangle", "-A", "PREROUTING", "-i", ep.iface, *tag]):
        run(in_netns(netns_path(ep.netns), argv))


def clear_link(lab: "Lab", at: str) -> None:
    """Remove every impairment of a link (idempotent)."""
    for ep in link_endpoints(lab, at):
        run(in_netns(netns_path(ep.netns), ["tc", "qdisc", "del", "dev", ep.iface, "root"]), check=False)
        for table in ("mangle", "raw"):
            rules = run(in_netns(netns_path(ep.netns), ["iptables-save", "-t", table]), check=False).stdout
            for line in rules.splitlines():
                if line.startswith("-A ") and (f"netsim:{lab.name}:loss" in line
                                               or f"netsim:{lab.name}:delay" in line):
                    argv = ["iptables", "-w", "-t", table, "-D", *shlex.split(line)[1:]]
                    run(in_netns(netns_path(ep.netns), argv), check=False)
    _stop_delayer(lab, at)   # after its rules are gone: nothing is queued for it any more


def apply_link(lab: "Lab", link: Link) -> str:
    """Impair a link as the scenario (or `netsim netem`) says, replacing what was there.  Returns
    how delay was applied: "netem", "delayq" (no sch_netem here) or "" (no delay)."""
    clear_link(lab, link.at)
    how = ""
    eps = link_endpoints(lab, link.at)
    for ep in eps:
        if link.delay is not None and how != "delayq":
            netem = ["qdisc", "replace", "dev", ep.iface, "root", "handle", "1:", "netem", "delay", link.delay]
            if link.jitter:
                netem.append(link.jitter)
            if run(in_netns(netns_path(ep.netns), ["tc", *netem]), check=False).returncode == 0:
                how = "netem"
                if link.rate is not None:
                    _tc(ep, "qdisc", "replace", "dev", ep.iface, "parent", "1:1", "handle", "10:", "tbf",
                        "rate", link.rate, "burst", "32kbit", "latency", "400ms")
                continue
            if how == "netem":
                raise LabError(f"link {link.at}: netem worked at one end and not at {ep.iface}")
            how = "delayq"     # no sch_netem in this kernel: the queue delayer at the routed end
        if link.rate is not None:
            _tc(ep, "qdisc", "replace", "dev", ep.iface, "root", "tbf", "rate", link.rate,
                "burst", "32kbit", "latency", "400ms")
    if how == "delayq":
        _start_delayer(lab, link, eps[0])
    if link.loss:
        ep = eps[0]   # the routed end: host NIC, router WAN, container eth0
        for argv in _loss_rules(lab, ep, link.loss):
            run(in_netns(netns_path(ep.netns), argv))
    return how


def describe(link: Link, how: str = "") -> str:
    """`link nic: rate 20mbit, loss 33%, delay 50ms (nfqueue delayer: no sch_netem here)`."""
    parts = [f"{k} {v}{'%' if k == 'loss' else ''}" for k, v in
             (("rate", link.rate), ("loss", link.loss), ("delay", link.delay), ("jitter", link.jitter))
             if v is not None]
    note = " (netfilter-queue delayer: this kernel has no sch_netem)" if how == "delayq" else ""
    return f"link {link.at}: " + ", ".join(parts) + note

"""Link impairments at a link's egress: rate with tc tbf, random loss with iptables' statistic
match (this kernel family may lack sch_netem and act_gact), delay/jitter with tc netem where the
kernel has it.  Each link is impaired in a namespace the lab owns, whatever the engine:

  nic       the Docker host's uplink: egress of the host's NIC and of the router's side of it
  wan       the home router's public side (both ways)
  CONTAINER the container's eth0 (both ways: inside its namespace and its veth on the bridge)
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import EnvironmentProblem, LabError
from ..scenario.schema import Link
from .command import in_netns, run
from .netns import netns_path

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["Endpoint", "link_endpoints", "apply_link", "clear_link"]


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


def clear_link(lab: "Lab", at: str) -> None:
    """Remove every impairment of a link (idempotent)."""
    for ep in link_endpoints(lab, at):
        run(in_netns(netns_path(ep.netns), ["tc", "qdisc", "del", "dev", ep.iface, "root"]), check=False)
        for table in ("mangle", "raw"):
            rules = run(in_netns(netns_path(ep.netns), ["iptables-save", "-t", table]), check=False).stdout
            for line in rules.splitlines():
                if line.startswith("-A ") and f"netsim:{lab.name}:loss" in line:
                    argv = ["iptables", "-w", "-t", table, "-D", *shlex.split(line)[1:]]
                    run(in_netns(netns_path(ep.netns), argv), check=False)


def apply_link(lab: "Lab", link: Link) -> None:
    """Impair a link as the scenario (or `netsim netem`) says, replacing what was there."""
    clear_link(lab, link.at)
    for ep in link_endpoints(lab, link.at):
        if link.delay is not None:
            netem = ["qdisc", "replace", "dev", ep.iface, "root", "handle", "1:", "netem", "delay", link.delay]
            if link.jitter:
                netem.append(link.jitter)
            p = run(in_netns(netns_path(ep.netns), ["tc", *netem]), check=False)
            if p.returncode != 0:
                raise EnvironmentProblem(
                    f"link {link.at}: delay needs the kernel's netem qdisc (sch_netem), which this "
                    f"kernel does not have ({p.stderr.strip().splitlines()[-1] if p.stderr.strip() else 'tc failed'}); "
                    "use rate and loss, or a kernel with CONFIG_NET_SCH_NETEM")
            if link.rate is not None:
                _tc(ep, "qdisc", "replace", "dev", ep.iface, "parent", "1:1", "handle", "10:", "tbf",
                    "rate", link.rate, "burst", "32kbit", "latency", "400ms")
        elif link.rate is not None:
            _tc(ep, "qdisc", "replace", "dev", ep.iface, "root", "tbf", "rate", link.rate,
                "burst", "32kbit", "latency", "400ms")
    if link.loss:
        ep = link_endpoints(lab, link.at)[0]   # the routed end: host NIC, router WAN, container eth0
        for argv in _loss_rules(lab, ep, link.loss):
            run(in_netns(netns_path(ep.netns), argv))

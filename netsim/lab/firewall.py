"""Docker's iptables rules for the default bridge and user-defined networks, rendered as iptables-restore input.
Rendering is pure (unit-tested against golden dumps, one per configuration, as moby keeps
them under integration/network/bridge/iptablesdoc); applying runs iptables-restore inside the
lab's host namespace.

The layout is Docker 28's, with `--userland-proxy=false` (NAT in the kernel only):

  raw    PREROUTING  -d C ! -i BR -j DROP                  (containers with published ports:
                                                            no direct access from outside)
  raw    PREROUTING  -d 127.0.0.1 ! -i lo --dport HP -j DROP (ports published on 127.0.0.1)
  nat    PREROUTING  -m addrtype --dst-type LOCAL -j DOCKER
  nat    OUTPUT      -m addrtype --dst-type LOCAL -j DOCKER
  nat    POSTROUTING -o BR -m addrtype --src-type LOCAL -j MASQUERADE   (host -> 127.0.0.1:HP)
  nat    POSTROUTING -s SUBNET ! -o BR -j MASQUERADE
  nat    POSTROUTING -s C -d C -p P --dport CP -j MASQUERADE           (hairpin to itself)
  nat    DOCKER      [-d HOST_IP] -p P --dport HP -j DNAT --to-destination C:CP
  filter FORWARD     policy DROP; -j DOCKER-USER; -j DOCKER-FORWARD
  filter DOCKER-FORWARD -j DOCKER-CT; -j DOCKER-INTERNAL; -j DOCKER-BRIDGE; -i BR -j ACCEPT
  filter DOCKER-CT   -o BR ctstate RELATED,ESTABLISHED -j ACCEPT
  filter DOCKER-BRIDGE -o BR -j DOCKER
  filter DOCKER      -d C ! -i BR -o BR -p P --dport CP -j ACCEPT      (per published port)
  filter DOCKER      ! -i BR -o BR -j DROP                         (isolation: per bridge)
  internal networks: no MASQUERADE, no DOCKER/DOCKER-CT/DOCKER-BRIDGE rules; instead
  filter DOCKER-INTERNAL ! -s SUBNET -o BR -j DROP; ! -d SUBNET -i BR -j DROP
  filter DOCKER-FORWARD  -i BR -o BR -j ACCEPT                        (inside the network only)
Every rule carries the comment `netsim:<lab>`.
"""
from __future__ import annotations

from ..model.addressing import Plan
from ..model.nat import publications
from ..scenario.schema import Scenario

__all__ = ["render_rules", "render_home_router_rules"]


def render_home_router_rules(plan: Plan, lab: str) -> str:
    """The home router: NAPT of its LAN out of its public side, as a home router does."""
    if plan.home_lan is None:
        return ""
    tag = f'-m comment --comment "netsim:{lab}"'
    return ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            ":POSTROUTING ACCEPT [0:0]\n"
            f"-A POSTROUTING -s {plan.home_lan.network} -o wan0 {tag} -j MASQUERADE\nCOMMIT\n")


def render_rules(s: Scenario, plan: Plan, lab: str) -> str:
    """Docker 28's rules for every network, in the order a daemon creating the default network
    and then the scenario's networks one by one leaves them (moby's usernet-*.md): per-network
    nat POSTROUTING rules are inserted at the top (the newest network first), filter rules are
    appended (the oldest first), DOCKER-INTERNAL rules are inserted (the newest first)."""
    tag = f'-m comment --comment "netsim:{lab}"'
    nets = list(plan.networks.values()) or []
    external = [n for n in nets if not n.internal]
    internal = [n for n in nets if n.internal]
    bridge_of = {n.name: n.bridge for n in nets}
    pubs = publications(s, plan)
    published = sorted({(p.container_ip, bridge_of.get(p.network, plan.bridge)) for p in pubs})
    raw = ["*raw", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    for ip, br in published:
        raw.append(f"-A PREROUTING -d {ip}/32 ! -i {br} {tag} -j DROP")
    for p in pubs:
        if p.host_ip is not None and p.host_ip.is_loopback:
            raw.append(f"-A PREROUTING -d {p.host_ip}/32 ! -i lo -p {p.proto} -m {p.proto} "
                       f"--dport {p.host_port} {tag} -j DROP")
    raw.append("COMMIT")
    nat = [
        "*nat",
        ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]", ":DOCKER - [0:0]",
        f"-A PREROUTING -m addrtype --dst-type LOCAL {tag} -j DOCKER",
        f"-A OUTPUT -m addrtype --dst-type LOCAL {tag} -j DOCKER",
    ]
    for n in reversed(external):
        nat.append(f"-A POSTROUTING -o {n.bridge} -m addrtype --src-type LOCAL {tag} -j MASQUERADE")
        if s.host.masquerade:
            nat.append(f"-A POSTROUTING -s {n.subnet} ! -o {n.bridge} {tag} -j MASQUERADE")
    seen: set[tuple[object, ...]] = set()
    for p in pubs:
        key = (p.container_ip, p.proto, p.container_port)
        if key not in seen:
            seen.add(key)
            nat.append(f"-A POSTROUTING -s {p.container_ip}/32 -d {p.container_ip}/32 -p {p.proto} "
                       f"-m {p.proto} --dport {p.container_port} {tag} -j MASQUERADE")
    for p in pubs:
        dst = f"-d {p.host_ip}/32 " if p.host_ip is not None else ""
        nat.append(f"-A DOCKER {dst}-p {p.proto} -m {p.proto} --dport {p.host_port} {tag} "
                   f"-j DNAT --to-destination {p.container_ip}:{p.container_port}")
    nat.append("COMMIT")
    flt = [
        "*filter",
        ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
        ":DOCKER - [0:0]", ":DOCKER-BRIDGE - [0:0]", ":DOCKER-CT - [0:0]",
        ":DOCKER-FORWARD - [0:0]", ":DOCKER-INTERNAL - [0:0]", ":DOCKER-USER - [0:0]",
        f"-A FORWARD {tag} -j DOCKER-USER",
        f"-A FORWARD {tag} -j DOCKER-FORWARD",
    ]
    seen = set()
    for p in pubs:
        key = (p.container_ip, p.proto, p.container_port)
        if key not in seen:
            seen.add(key)
            br = bridge_of.get(p.network, plan.bridge)
            flt.append(f"-A DOCKER -d {p.container_ip}/32 ! -i {br} -o {br} -p {p.proto} -m {p.proto} "
                       f"--dport {p.container_port} {tag} -j ACCEPT")
    flt += [f"-A DOCKER ! -i {n.bridge} -o {n.bridge} {tag} -j DROP" for n in external]
    flt += [f"-A DOCKER-BRIDGE -o {n.bridge} {tag} -j DOCKER" for n in external]
    flt += [f"-A DOCKER-CT -o {n.bridge} -m conntrack --ctstate RELATED,ESTABLISHED {tag} -j ACCEPT"
            for n in external]
    flt += [
        f"-A DOCKER-FORWARD {tag} -j DOCKER-CT",
        f"-A DOCKER-FORWARD {tag} -j DOCKER-INTERNAL",
        f"-A DOCKER-FORWARD {tag} -j DOCKER-BRIDGE",
    ]
    flt += [f"-A DOCKER-FORWARD -i {n.bridge} {tag} -j ACCEPT" if not n.internal else
            f"-A DOCKER-FORWARD -i {n.bridge} -o {n.bridge} {tag} -j ACCEPT" for n in nets]
    for n in reversed(internal):
        flt += [f"-A DOCKER-INTERNAL ! -s {n.subnet} -o {n.bridge} {tag} -j DROP",
                f"-A DOCKER-INTERNAL ! -d {n.subnet} -i {n.bridge} {tag} -j DROP"]
    flt.append("COMMIT")
    return "\n".join(raw + nat + flt) + "\n"

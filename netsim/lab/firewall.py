"""Docker's iptables rules for one bridge, rendered as iptables-restore input.  Rendering is
pure (unit-tested against a golden dump); applying runs iptables-restore inside the lab's host
namespace.

Layout (Docker's classic bridge driver):
  nat    PREROUTING  -m addrtype --dst-type LOCAL -j DOCKER
  nat    OUTPUT      ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
  nat    POSTROUTING -s SUBNET ! -o BRIDGE -j MASQUERADE
  nat    POSTROUTING -s C -d C -p P --dport CP -j MASQUERADE          (hairpin, per published port)
  nat    DOCKER      -i BRIDGE -j RETURN
  nat    DOCKER      ! -i BRIDGE -p P --dport HP -j DNAT --to-destination C:CP
  filter FORWARD     policy DROP; DOCKER-USER, DOCKER-ISOLATION-STAGE-1, then per bridge:
                     -o BRIDGE ctstate RELATED,ESTABLISHED ACCEPT; -o BRIDGE -j DOCKER;
                     -i BRIDGE ! -o BRIDGE ACCEPT; -i BRIDGE -o BRIDGE ACCEPT
  filter DOCKER      -d C ! -i BRIDGE -o BRIDGE -p P --dport CP -j ACCEPT   (per published port)
Every rule carries the comment `netsim:<lab>`.
"""
from __future__ import annotations

from ..model.addressing import Plan
from ..model.nat import publications
from ..scenario.schema import Scenario

__all__ = ["render_rules"]


def render_rules(s: Scenario, plan: Plan, lab: str) -> str:
    tag = f'-m comment --comment "netsim:{lab}"'
    br, sub = plan.bridge, str(plan.subnet)
    pubs = sorted(publications(s, plan).values(), key=lambda p: (p.proto, p.host_port))
    nat = [
        "*nat",
        ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]", ":DOCKER - [0:0]",
        f"-A PREROUTING -m addrtype --dst-type LOCAL {tag} -j DOCKER",
        f"-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL {tag} -j DOCKER",
    ]
    if s.host.masquerade:
        nat.append(f"-A POSTROUTING -s {sub} ! -o {br} {tag} -j MASQUERADE")
    for p in pubs:
        nat.append(f"-A POSTROUTING -s {p.container_ip}/32 -d {p.container_ip}/32 -p {p.proto} "
                   f"-m {p.proto} --dport {p.container_port} {tag} -j MASQUERADE")
    nat.append(f"-A DOCKER -i {br} {tag} -j RETURN")
    for p in pubs:
        nat.append(f"-A DOCKER ! -i {br} -p {p.proto} -m {p.proto} --dport {p.host_port} {tag} "
                   f"-j DNAT --to-destination {p.container_ip}:{p.container_port}")
    nat.append("COMMIT")
    flt = [
        "*filter",
        ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
        ":DOCKER - [0:0]", ":DOCKER-ISOLATION-STAGE-1 - [0:0]",
        ":DOCKER-ISOLATION-STAGE-2 - [0:0]", ":DOCKER-USER - [0:0]",
        f"-A FORWARD {tag} -j DOCKER-USER",
        f"-A FORWARD {tag} -j DOCKER-ISOLATION-STAGE-1",
        f"-A FORWARD -o {br} -m conntrack --ctstate RELATED,ESTABLISHED {tag} -j ACCEPT",
        f"-A FORWARD -o {br} {tag} -j DOCKER",
        f"-A FORWARD -i {br} ! -o {br} {tag} -j ACCEPT",
        f"-A FORWARD -i {br} -o {br} {tag} -j ACCEPT",
    ]
    for p in pubs:
        flt.append(f"-A DOCKER -d {p.container_ip}/32 ! -i {br} -o {br} -p {p.proto} -m {p.proto} "
                   f"--dport {p.container_port} {tag} -j ACCEPT")
    flt += [
        f"-A DOCKER-ISOLATION-STAGE-1 -i {br} ! -o {br} {tag} -j DOCKER-ISOLATION-STAGE-2",
        f"-A DOCKER-ISOLATION-STAGE-1 {tag} -j RETURN",
        f"-A DOCKER-ISOLATION-STAGE-2 -o {br} {tag} -j DROP",
        f"-A DOCKER-ISOLATION-STAGE-2 {tag} -j RETURN",
        f"-A DOCKER-USER {tag} -j RETURN",
        "COMMIT",
    ]
    return "\n".join(nat + flt) + "\n"

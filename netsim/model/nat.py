"""Docker's NAT semantics as Linux netfilter carries them out.  Pure.

- Published ports: DNAT `host:HOST_PORT/proto` -> `container:CONTAINER_PORT` (Docker's nat
  `DOCKER` chain), to the container's address on the network that gives it its default route
  (moby programs port mappings for the gateway endpoint only).
- MASQUERADE: packets from the bridge subnet leaving by another interface get the NIC address
  as source.  Port selection (NAT-BEHAVIOUR.md): reuse the mapping the same inside ip:port
  already has if the resulting tuple is unique; else keep the original port if free; else some
  other port (which port the kernel picks is not predictable: the model says "remapped").
- Conntrack keeps every mapping for the life of the run (timeouts are longer than a scenario).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..scenario.schema import Scenario
from .addressing import Plan

__all__ = ["Publication", "NatState", "publications", "find_publication"]


@dataclass(frozen=True)
class Publication:
    """One published port (a range is one Publication per port)."""

    proto: str
    host_port: int
    container: str
    container_ip: ipaddress.IPv4Address
    container_port: int
    host_ip: ipaddress.IPv4Address | None = None   # None: every host address (0.0.0.0)
    network: str = "bridge"                         # where the container is published (its gateway network)

    def accepts(self, dst: ipaddress.IPv4Address | str) -> bool:
        return self.host_ip is None or ipaddress.IPv4Address(dst) == self.host_ip


def publications(s: Scenario, plan: Plan) -> list[Publication]:
    """Every published port, in scenario order."""
    out: list[Publication] = []
    for c in s.containers:
        addr = plan.containers.get(c.name)
        if addr is None or addr.gateway_network is None:
            continue   # a network_mode or internal-only container publishes nothing
        ep = addr.on(addr.gateway_network)
        assert ep is not None
        for p in c.publish:
            for hp, cp in p.pairs():
                out.append(Publication(p.proto, hp, c.name, ep.ip, cp, p.host_ip, ep.network))
    return out


def find_publication(pubs: list[Publication], proto: str, dst: str, port: int | None) -> Publication | None:
    """The publication a packet to dst:port/proto on the host hits (Docker's nat DOCKER chain)."""
    for p in pubs:
        if p.proto == proto and p.host_port == port and p.accepts(dst):
            return p
    return None


@dataclass
class NatState:
    """The masquerade table the kernel will hold: which outside ports are taken, per remote."""

    # (proto, inside ip, inside port) -> outside port
    mappings: dict[tuple[str, str, int], int | None] = field(default_factory=dict)
    # (proto, outside port, remote ip, remote port) -> inside (ip, port)
    taken: dict[tuple[str, int, str, int], tuple[str, int]] = field(default_factory=dict)

    def masquerade(self, proto: str, src: str, sport: int | None, dst: str, dport: int | None
                   ) -> tuple[int | None, bool]:
        """The outside port for a new flow, and whether it was remapped away from the inside
        port.  None = unknown (ephemeral inside port, or a remap the kernel picks)."""
        if sport is None or dport is None:
            return None, False
        key = (proto, src, sport)
        prev = self.mappings.get(key)
        for candidate in ([prev] if prev is not None else []) + [sport]:
            owner = self.taken.get((proto, candidate, dst, dport))
            if owner is None or owner == (src, sport):
                self.mappings[key] = candidate
                self.taken[(proto, candidate, dst, dport)] = (src, sport)
                return candidate, candidate != sport
        self.mappings[key] = None
        return None, True

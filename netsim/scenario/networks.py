"""A scenario's networks with Docker's defaults filled in.  Pure.

The default network `bridge` is the host's docker0 (`host.bridge`); it always exists, as on a
Docker host.  A user-defined network without a subnet gets the next free 172.N.0.0/16 from
172.18 up (Docker's default address pool hands them out in creation order), its gateway is the
subnet's first host, and its bridge is named `br-` + 12 hex digits (Docker uses the network id;
ours is derived from the network's name, so the model can name it without the kernel).
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from .schema import DEFAULT_NETWORK, Container, Scenario

__all__ = ["NetworkSpec", "resolve_networks", "bridge_name_for", "container_networks", "DEFAULT_NETWORK"]


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    bridge: str
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    internal: bool = False
    default: bool = False
    index: int = 0                  # position in the scenario's `networks:` (-1: the default)


def bridge_name_for(network: str) -> str:
    return "br-" + hashlib.sha1(f"netsim-network:{network}".encode()).hexdigest()[:12]


def resolve_networks(s: Scenario) -> dict[str, NetworkSpec]:
    """Every network of the scenario in creation order (the default network first)."""
    b = s.host.bridge
    out = {DEFAULT_NETWORK: NetworkSpec(DEFAULT_NETWORK, b.name, b.subnet, b.gateway or next(b.subnet.hosts()),
                                        default=True, index=-1)}
    taken = [b.subnet, s.host.nic.address.network, s.upstream.subnet] + [n.subnet for n in s.networks if n.subnet]
    if s.upstream.kind == "home-router":
        taken += [s.upstream.lan, s.upstream.wan.network]
    pool = (ipaddress.IPv4Network(f"172.{i}.0.0/16") for i in range(18, 32))
    for i, n in enumerate(s.networks):
        subnet = n.subnet
        if subnet is None:
            subnet = next((p for p in pool if not any(p.overlaps(t) for t in taken)), None)
            if subnet is None:  # the loader reports it; keep the model total
                subnet = ipaddress.IPv4Network("10.255.255.0/30")
            taken.append(subnet)
        gw = n.gateway or next(subnet.hosts())
        out[n.name] = NetworkSpec(n.name, n.bridge or bridge_name_for(n.name), subnet, gw, n.internal, index=i)
    return out


def container_networks(c: Container) -> list[str]:
    """The networks a container joins, in order (eth0, eth1, ...); none with a network_mode."""
    if c.network_mode is not None:
        return []
    return list(c.networks) if c.networks else [DEFAULT_NETWORK]

"""IPAM and naming: where every container, interface and host of a scenario sits.  Pure.

Docker hands out bridge addresses in order from the subnet (the gateway takes the first), and
derives a container's MAC from its address (02:42 + the four address bytes).  Host-side veth
names are `veth` + 7 hex digits, as Docker's are; ours are derived from the container's name
so the model can name them without the kernel.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from ..scenario.schema import Scenario

__all__ = ["ContainerAddr", "Plan", "plan", "mac_for", "veth_name"]


def mac_for(ip: ipaddress.IPv4Address) -> str:
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


def veth_name(container: str) -> str:
    return "veth" + hashlib.sha1(container.encode()).hexdigest()[:7]


@dataclass(frozen=True)
class ContainerAddr:
    name: str
    ip: ipaddress.IPv4Address
    mac: str
    veth: str                       # host-side interface on the bridge
    ifname: str = "eth0"            # inside the container


@dataclass(frozen=True)
class Plan:
    bridge: str
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    nic: str
    nic_ip: ipaddress.IPv4Interface
    nic_gateway: ipaddress.IPv4Address
    upstream_subnet: ipaddress.IPv4Network
    upstream_router: ipaddress.IPv4Address       # the ISP router's address on the external side
    containers: dict[str, ContainerAddr]
    externals: dict[str, ipaddress.IPv4Address]
    # home-router upstream: the router's LAN address and network, its public (WAN) address
    home_lan: ipaddress.IPv4Interface | None = None
    home_wan: ipaddress.IPv4Interface | None = None
    isp_gateway: ipaddress.IPv4Address | None = None     # the ISP's address on the WAN link

    @property
    def home(self) -> bool:
        return self.home_lan is not None

    def on_lan(self, name: str) -> bool:
        """An external host on the home LAN (not on the internet side)."""
        return (self.home_lan is not None and name in self.externals
                and self.externals[name] in self.home_lan.network)

    def address_of(self, name: str) -> ipaddress.IPv4Address:
        """A container's bridge address, an external's address, or `host` = the NIC address."""
        if name == "host":
            return self.nic_ip.ip
        if name == "gateway":
            return self.gateway
        if name == "router" and self.home_wan is not None:
            return self.home_wan.ip
        if name in self.containers:
            return self.containers[name].ip
        if name in self.externals:
            return self.externals[name]
        return ipaddress.IPv4Address(name)

    def owner_of(self, ip: ipaddress.IPv4Address | str) -> str | None:
        ip = ipaddress.IPv4Address(ip)
        if ip == self.nic_ip.ip:
            return "host"
        if self.home_wan is not None and ip in (self.home_wan.ip, self.home_lan.ip if self.home_lan else None):
            return "router"
        for c in self.containers.values():
            if c.ip == ip:
                return c.name
        for n, a in self.externals.items():
            if a == ip:
                return n
        return None

    @property
    def captured_interfaces(self) -> tuple[str, ...]:
        """Interfaces of the host namespace the tracer captures: every veth, the bridge, the NIC."""
        return tuple(c.veth for c in self.containers.values()) + (self.bridge, self.nic)

    @property
    def router_captured_interfaces(self) -> tuple[str, ...]:
        """Interfaces of the home router the tracer captures (its public side)."""
        return ("wan0",) if self.home else ()


def plan(s: Scenario) -> Plan:
    b = s.host.bridge
    gateway = b.gateway or next(b.subnet.hosts())
    taken = {gateway} | {c.ip for c in s.containers if c.ip is not None}
    free = (ip for ip in b.subnet.hosts() if ip not in taken)
    containers: dict[str, ContainerAddr] = {}
    veths: set[str] = set()
    for c in s.containers:
        ip = c.ip if c.ip is not None else next(free)
        veth = veth_name(c.name)
        if veth in veths:  # a 28-bit hash collision: still deterministic, still unique
            veth = veth_name(c.name + "#")
        veths.add(veth)
        containers[c.name] = ContainerAddr(c.name, ip, mac_for(ip), veth)
    nic_ip, nic_gw = s.host.nic.address, s.host.nic.gateway
    home_lan = home_wan = isp_gw = None
    if s.upstream.kind == "home-router":
        lan = s.upstream.lan
        home_lan = ipaddress.IPv4Interface(f"{next(lan.hosts())}/{lan.prefixlen}")
        home_wan = s.upstream.wan
        isp_gw = next(h for h in home_wan.network.hosts() if h != home_wan.ip)
        if "nic" not in s.host.model_fields_set or "address" not in s.host.nic.model_fields_set:
            nic_ip = ipaddress.IPv4Interface(f"{list(lan.hosts())[1]}/{lan.prefixlen}")
            nic_gw = home_lan.ip
    return Plan(
        bridge=b.name, subnet=b.subnet, gateway=gateway,
        nic=s.host.nic.name, nic_ip=nic_ip, nic_gateway=nic_gw,
        home_lan=home_lan, home_wan=home_wan, isp_gateway=isp_gw,
        upstream_subnet=s.upstream.subnet, upstream_router=next(s.upstream.subnet.hosts()),
        containers=containers, externals={x.name: x.address for x in s.externals},
    )

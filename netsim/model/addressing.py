"""IPAM and naming: where every container, interface and host of a scenario sits.  Pure.

Docker hands out bridge addresses in order from the subnet (the gateway takes the first), and
derives a container's MAC from its address (02:42 + the four address bytes).  Host-side veth
names are `veth` + 7 hex digits, as Docker's are; ours are derived from the container's name
so the model can name them without the kernel.
"""
from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ..scenario.networks import NetworkSpec, container_networks, resolve_networks
from ..scenario.schema import Scenario

__all__ = ["ContainerAddr", "Endpoint", "NetworkSpec", "Plan", "plan", "mac_for", "veth_name", "readdress",
           "with_addresses"]


def mac_for(ip: ipaddress.IPv4Address) -> str:
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


def veth_name(container: str) -> str:
    return "veth" + hashlib.sha1(container.encode()).hexdigest()[:7]


@dataclass(frozen=True)
class Endpoint:
    """A container's interface on one network."""

    container: str
    network: str
    ip: ipaddress.IPv4Address
    mac: str
    veth: str                       # host-side interface on the network's bridge
    ifname: str                     # inside the container: eth0, eth1, ... in joining order


@dataclass(frozen=True)
class ContainerAddr:
    """A container with interfaces of its own; `ip`, `mac`, `veth`, `ifname` are its first
    network's (the address its name stands for)."""

    name: str
    ip: ipaddress.IPv4Address
    mac: str
    veth: str                       # host-side interface on the bridge
    ifname: str = "eth0"            # inside the container
    endpoints: tuple[Endpoint, ...] = ()
    gateway_network: str | None = None   # default route and published ports (None: internal only)

    @property
    def network(self) -> str:
        return self.endpoints[0].network if self.endpoints else "bridge"

    def on(self, network: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.network == network), None)

    def readdressed(self, ips: Sequence[ipaddress.IPv4Address]) -> ContainerAddr:
        """The same interfaces with new addresses, one per endpoint in order; MACs follow."""
        eps = tuple(replace(e, ip=ip, mac=mac_for(ip)) for e, ip in zip(self.endpoints, ips, strict=True))
        return replace(self, ip=eps[0].ip, mac=eps[0].mac, endpoints=eps)


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
    networks: dict[str, NetworkSpec] = field(default_factory=dict)   # the default network first
    # containers without interfaces of their own: name -> host | none | container:NAME
    modes: dict[str, str] = field(default_factory=dict)
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

    def network_of_ip(self, ip: ipaddress.IPv4Address | str) -> NetworkSpec | None:
        ip = ipaddress.IPv4Address(ip)
        return next((n for n in self.networks.values() if ip in n.subnet), None)

    def endpoints(self) -> list[Endpoint]:
        return [e for c in self.containers.values() for e in c.endpoints]

    def netns_owner(self, name: str) -> str:
        """Whose network namespace a container uses: itself, `host`, or (container:X) X's owner."""
        mode = self.modes.get(name)
        if mode == "host":
            return "host"
        if mode is not None and mode.startswith("container:"):
            return self.netns_owner(mode.removeprefix("container:"))
        return name

    def address_of(self, name: str) -> ipaddress.IPv4Address:
        """A container's address (on its first network; `NAME@NETWORK` on another), an
        external's address, `host` = the NIC address, `gateway[@NETWORK]` a bridge's address."""
        if "@" in name:
            who, _, net = name.partition("@")
            if who == "gateway":
                return self.networks[net].gateway
            ep = self.containers[self.netns_owner(who)].on(net)
            if ep is None:
                raise KeyError(name)
            return ep.ip
        if name in self.modes:
            owner = self.netns_owner(name)
            if owner == "host":
                return self.nic_ip.ip
            if owner in self.modes:      # network_mode none: only lo
                return ipaddress.IPv4Address("127.0.0.1")
            return self.address_of(owner)
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
            if any(e.ip == ip for e in c.endpoints) or c.ip == ip:
                return c.name
        for n, a in self.externals.items():
            if a == ip:
                return n
        return None

    @property
    def captured_interfaces(self) -> tuple[str, ...]:
        """Interfaces of the host namespace the tracer captures: every veth, the bridge, the NIC."""
        return tuple(e.veth for e in self.endpoints()) + tuple(n.bridge for n in self.networks.values()) + (self.nic,)

    def captured_interface_info(self) -> dict[str, dict[str, object]]:
        """What the trace manifest says about each captured host interface, by model name:
        role (veth | bridge | nic), addresses, and for a veth its container, network, the
        container-side address and MAC; for a bridge its network."""
        out: dict[str, dict[str, object]] = {}
        for e in self.endpoints():
            net = self.networks[e.network]
            out[e.veth] = {"role": "veth", "container": e.container, "network": e.network, "addresses": [],
                           "peer_ifname": e.ifname, "peer_address": f"{e.ip}/{net.subnet.prefixlen}",
                           "peer_mac": e.mac}
        for n in self.networks.values():
            out[n.bridge] = {"role": "bridge", "network": n.name, "internal": n.internal,
                             "addresses": [f"{n.gateway}/{n.subnet.prefixlen}"]}
        out[self.nic] = {"role": "nic", "addresses": [str(self.nic_ip)]}
        return out

    @property
    def router_captured_interfaces(self) -> tuple[str, ...]:
        """Interfaces of the home router the tracer captures (its public side)."""
        return ("wan0",) if self.home else ()


def _gateway_network(joined: list[str], nets: dict[str, NetworkSpec]) -> str | None:
    """The network giving a container its default route, where Docker also publishes its ports
    (moby's Endpoint.Less: non-internal first, then by network name)."""
    candidates = sorted(n for n in joined if not nets[n].internal)
    return candidates[0] if candidates else None


def plan(s: Scenario) -> Plan:
    nets = resolve_networks(s)
    default = next(iter(nets.values()))
    gateway = default.gateway
    fixed = {c.ip for c in s.containers if c.ip is not None}
    def pool(spec: NetworkSpec) -> Iterator[ipaddress.IPv4Address]:
        return (ip for ip in spec.subnet.hosts() if ip != spec.gateway and ip not in fixed)
    free = {n: pool(spec) for n, spec in nets.items()}
    containers: dict[str, ContainerAddr] = {}
    modes: dict[str, str] = {}
    veths: set[str] = set()
    for c in s.containers:
        if c.network_mode is not None:
            modes[c.name] = c.network_mode
            continue
        joined = container_networks(c)
        eps: list[Endpoint] = []
        for k, net in enumerate(joined):
            ip = c.ip if (k == 0 and c.ip is not None) else next(free[net])
            veth = veth_name(c.name if k == 0 else f"{c.name}@{net}")
            if veth in veths:  # a 28-bit hash collision: still deterministic, still unique
                veth = veth_name(c.name + "#" + net)
            veths.add(veth)
            eps.append(Endpoint(c.name, net, ip, mac_for(ip), veth, f"eth{k}"))
        first = eps[0]
        containers[c.name] = ContainerAddr(c.name, first.ip, first.mac, first.veth, first.ifname, tuple(eps),
                                           _gateway_network(joined, nets))
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
        bridge=default.bridge, subnet=default.subnet, gateway=gateway, networks=nets, modes=modes,
        nic=s.host.nic.name, nic_ip=nic_ip, nic_gateway=nic_gw,
        home_lan=home_lan, home_wan=home_wan, isp_gateway=isp_gw,
        upstream_subnet=s.upstream.subnet, upstream_router=next(s.upstream.subnet.hosts()),
        containers=containers, externals={x.name: x.address for x in s.externals},
    )


def readdress(plan: Plan, s: Scenario, name: str, running: Mapping[str, ContainerAddr]) -> ContainerAddr:
    """The addresses a container that starts again gets, as Docker's IPAM hands them out: a
    stopped container's endpoints were released, so on each of its networks it gets the lowest
    free address — its old one when still free, another when a container took it meanwhile.
    Held back: each gateway, the addresses of the `running` containers (name -> their current
    addresses) and the scenario's fixed addresses; a fixed `ip` of its own must be free (else
    ValueError, Docker's "Address already in use").  MACs follow the addresses; the interfaces
    keep their names."""
    old = plan.containers[name]
    fixed = {c.ip for c in s.containers if c.ip is not None and c.name != name}
    own_fixed = next((c.ip for c in s.containers if c.name == name), None)
    ips: list[ipaddress.IPv4Address] = []
    for k, e in enumerate(old.endpoints):
        spec = plan.networks[e.network]
        taken = {spec.gateway} | fixed | {x.ip for a in running.values() if a.name != name
                                          for x in a.endpoints if x.network == e.network}
        if k == 0 and own_fixed is not None:
            if own_fixed in taken:
                raise ValueError(f"container {name}: its fixed address {own_fixed} on {e.network} is in use")
            ip = own_fixed
        else:
            free = next((h for h in spec.subnet.hosts() if h not in taken), None)
            if free is None:
                raise ValueError(f"container {name}: no free address left on {e.network} ({spec.subnet})")
            ip = free
        ips.append(ip)
    return old.readdressed(ips)


def with_addresses(plan: Plan, current: Mapping[str, ContainerAddr | None]) -> Plan:
    """The plan of a running lab: containers readdressed by restarts take their current
    addresses, stopped ones (None) hold none."""
    containers = {n: current.get(n, a) for n, a in plan.containers.items()}
    return replace(plan, containers={n: a for n, a in containers.items() if a is not None})

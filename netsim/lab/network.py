"""Build the lab's network with netlink (pyroute2): the Docker host namespace with docker0,
one veth per container and the NIC; the upstream router; the external hosts.

    container ns: eth0 172.17.0.x ──veth── host ns: vethXXXXXXX ─┐
                                                                  docker0 172.17.0.1/16
                                           host ns: eth0 203.0.113.2 ──wire── up ns: host0 203.0.113.1
                                                                               up ns: ext0 198.51.100.1 (bridge)
                                           external ns: eth0 198.51.100.x ──veth── up ns: x-NAME
"""
from __future__ import annotations

from collections.abc import Callable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import LabError
from ..model.addressing import Plan
from ..model.topology import UPSTREAM_BRIDGE, UPSTREAM_NIC
from . import netns

__all__ = ["LabNames", "build_network", "CONTAINER_SYSCTLS", "QUIET", "idx", "up"]


class LabNames:
    """Names of a lab's namespaces: every one carries the lab's name."""

    def __init__(self, lab: str) -> None:
        self.lab = lab

    @property
    def host(self) -> str:
        return f"netsim-{self.lab}-host"

    @property
    def upstream(self) -> str:
        return f"netsim-{self.lab}-up"

    @property
    def home(self) -> str:
        return f"netsim-{self.lab}-home"

    def container(self, name: str) -> str:
        return f"netsim-{self.lab}-c-{name}"

    def external(self, name: str) -> str:
        return f"netsim-{self.lab}-x-{name}"

    def of(self, who: str, plan: Plan) -> str:
        """The namespace `who` sends from: a container with a network_mode uses the host's, or
        the one of the container it joined."""
        if who in plan.modes:
            owner = plan.netns_owner(who)
            return self.host if owner == "host" else self.container(owner)
        if who == "host":
            return self.host
        if who == "router":
            return self.home
        if who in plan.containers:
            return self.container(who)
        if who in plan.externals:
            return self.external(who)
        raise KeyError(who)


def idx(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise LabError(f"interface {name} not found")
    return int(found[0])


def up(ipr: IPRoute, name: str, **kw: object) -> int:
    i = idx(ipr, name)
    ipr.link("set", index=i, state="up", **kw)
    return i


CONTAINER_SYSCTLS = {
    # Docker sets both in every container's namespace: root in a user namespace may bind low
    # ports and send ICMP echo without CAP_NET_RAW in the initial namespace.
    "net.ipv4.ip_unprivileged_port_start": "0",
    "net.ipv4.ping_group_range": "0 2147483647",
}


def build_network(plan: Plan, names: LabNames, record: Callable[..., None]) -> None:
    """The engine-independent part: the Docker host namespace with its NIC, the upstream
    router and the external hosts.  Each namespace is recorded before it is created."""
    spaces = [names.host] + ([names.home] if plan.home else []) + [names.upstream]
    for ns in spaces + [names.external(x) for x in plan.externals]:
        record("netns", ns)
        netns.create(ns)
    try:
        _build_host_and_upstream(plan, names)
    except NetlinkError as e:
        raise LabError(f"netlink: {e}") from None


QUIET = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}


def _build_host_and_upstream(plan: Plan, names: LabNames) -> None:
    # the NIC's wire ends in the ISP router, or in the home router's LAN bridge
    peer_ns, peer_if = (names.home, "lan-host") if plan.home else (names.upstream, UPSTREAM_NIC)
    with IPRoute(netns=names.host) as ipr:
        up(ipr, "lo")
        ipr.link("add", ifname=plan.nic, kind="veth", peer={"ifname": peer_if, "net_ns_fd": peer_ns})
        nic = idx(ipr, plan.nic)
        ipr.addr("add", index=nic, address=str(plan.nic_ip.ip), prefixlen=plan.nic_ip.network.prefixlen)
        ipr.link("set", index=nic, state="up")
        ipr.route("add", dst="default", gateway=str(plan.nic_gateway))
    if plan.home_lan is not None and plan.home_wan is not None:
        with IPRoute(netns=names.home) as ipr:
            up(ipr, "lo")
            ipr.link("add", ifname="lan0", kind="bridge")
            lan = idx(ipr, "lan0")
            ipr.addr("add", index=lan, address=str(plan.home_lan.ip), prefixlen=plan.home_lan.network.prefixlen)
            up(ipr, "lan-host", master=lan)
            for name in plan.externals:
                if plan.on_lan(name):
                    ipr.link("add", ifname=f"lan-{name}"[:15], kind="veth",
                             peer={"ifname": "eth0", "net_ns_fd": names.external(name)})
                    up(ipr, f"lan-{name}"[:15], master=lan)
            ipr.link("set", index=lan, state="up")
            ipr.link("add", ifname="wan0", kind="veth", peer={"ifname": UPSTREAM_NIC, "net_ns_fd": names.upstream})
            wan = idx(ipr, "wan0")
            ipr.addr("add", index=wan, address=str(plan.home_wan.ip), prefixlen=plan.home_wan.network.prefixlen)
            ipr.link("set", index=wan, state="up")
            ipr.route("add", dst="default", gateway=str(plan.isp_gateway))
    with IPRoute(netns=names.upstream) as ipr:
        up(ipr, "lo")
        if plan.home_wan is not None:
            ipr.addr("add", index=idx(ipr, UPSTREAM_NIC), address=str(plan.isp_gateway),
                     prefixlen=plan.home_wan.network.prefixlen)
        else:
            ipr.addr("add", index=idx(ipr, UPSTREAM_NIC), address=str(plan.nic_gateway),
                     prefixlen=plan.nic_ip.network.prefixlen)
        up(ipr, UPSTREAM_NIC)
        ipr.link("add", ifname=UPSTREAM_BRIDGE, kind="bridge")
        ub = idx(ipr, UPSTREAM_BRIDGE)
        ipr.addr("add", index=ub, address=str(plan.upstream_router),
                 prefixlen=plan.upstream_subnet.prefixlen)
        for name in plan.externals:
            if plan.on_lan(name):
                continue
            ipr.link("add", ifname=f"x-{name}"[:15], kind="veth",
                     peer={"ifname": "eth0", "net_ns_fd": names.external(name)})
            up(ipr, f"x-{name}"[:15], master=ub)
        ipr.link("set", index=ub, state="up")
    for name, ip in plan.externals.items():
        lan_side = plan.on_lan(name) and plan.home_lan is not None
        prefix = plan.home_lan.network.prefixlen if lan_side and plan.home_lan else plan.upstream_subnet.prefixlen
        gw = plan.home_lan.ip if lan_side and plan.home_lan else plan.upstream_router
        with IPRoute(netns=names.external(name)) as ipr:
            up(ipr, "lo")
            ipr.addr("add", index=idx(ipr, "eth0"), address=str(ip), prefixlen=prefix)
            up(ipr, "eth0")
            ipr.route("add", dst="default", gateway=str(gw))
    # IPv6 is off in every lab namespace (as on Docker's default bridge): no router
    # solicitations or MLD reports in the traces.
    netns.write_sysctls(names.host, {
        **QUIET,
        "net.ipv4.ip_forward": "1",
        "net.netfilter.nf_conntrack_timestamp": "1",
    })
    netns.write_sysctls(names.upstream, {**QUIET, "net.ipv4.ip_forward": "1"})
    if plan.home_lan is not None:
        netns.write_sysctls(names.home, {**QUIET, "net.ipv4.ip_forward": "1"})
    for x in plan.externals:
        netns.write_sysctls(names.external(x), {**QUIET, "net.ipv4.ping_group_range": "0 2147483647"})

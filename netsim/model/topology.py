"""The lab as a networkx graph: namespaces and interfaces, and the paths between them.  Pure.

Nodes are namespaces (`ns:host`, `ns:c:web`, `ns:up`, `ns:x:server`) and interfaces
(`if:host:docker0`, `if:c:web:eth0`, ...).  An interface hangs off its namespace; a veth pair
or a wire joins two interfaces; a bridge port joins a veth to its bridge.  A path between two
namespaces therefore lists, in order, every interface a packet crosses.
"""
from __future__ import annotations

import networkx as nx

from .addressing import Plan

__all__ = ["build_graph", "path_interfaces", "HOST_NS", "UPSTREAM_NS", "HOME_NS", "HOME_WAN",
           "HOME_LAN_BRIDGE", "ns_of"]

HOST_NS = "ns:host"
UPSTREAM_NS = "ns:up"
HOME_NS = "ns:home"          # the home router (upstream kind home-router)
HOME_LAN_BRIDGE = "lan0"
HOME_WAN = "wan0"
UPSTREAM_NIC = "host0"       # the upstream router's side of the host NIC's wire
UPSTREAM_BRIDGE = "ext0"     # the upstream router's bridge to the external hosts


def ns_of(name: str, plan: Plan) -> str:
    if name in plan.modes:
        owner = plan.netns_owner(name)
        return HOST_NS if owner == "host" else f"ns:c:{owner}"
    if name == "host":
        return HOST_NS
    if name == "router":
        return HOME_NS
    if name in plan.containers:
        return f"ns:c:{name}"
    if name in plan.externals:
        return f"ns:x:{name}"
    raise KeyError(name)


def _iface(g: nx.Graph, ns: str, name: str, **attrs: object) -> str:
    node = f"if:{ns[3:]}:{name}"
    g.add_node(node, kind="iface", ns=ns, name=name, **attrs)
    g.add_edge(ns, node, kind="member")
    return node


def build_graph(plan: Plan) -> nx.Graph:
    g: nx.Graph = nx.Graph()
    g.add_node(HOST_NS, kind="ns", role="host", label="docker host")
    g.add_node(UPSTREAM_NS, kind="ns", role="upstream", label="ISP router")
    bridges = {n.name: _iface(g, HOST_NS, n.bridge, role="bridge", network=n.name, internal=n.internal,
                              address=f"{n.gateway}/{n.subnet.prefixlen}", captured=True)
               for n in plan.networks.values()}
    nic = _iface(g, HOST_NS, plan.nic, role="nic", address=str(plan.nic_ip), captured=True)
    if plan.home_lan is not None and plan.home_wan is not None:
        g.add_node(HOME_NS, kind="ns", role="home-router", label="home router")
        lan = _iface(g, HOME_NS, HOME_LAN_BRIDGE, role="home-lan", address=str(plan.home_lan))
        port = _iface(g, HOME_NS, "lan-host", role="home-lan-port")
        g.add_edge(nic, port, kind="wire")
        g.add_edge(port, lan, kind="bridge-port")
        wan = _iface(g, HOME_NS, HOME_WAN, role="home-wan", address=str(plan.home_wan), captured=True)
        up_nic = _iface(g, UPSTREAM_NS, UPSTREAM_NIC, role="upstream-nic",
                        address=f"{plan.isp_gateway}/{plan.home_wan.network.prefixlen}")
        g.add_edge(wan, up_nic, kind="wire")
    else:
        up_nic = _iface(g, UPSTREAM_NS, UPSTREAM_NIC, role="upstream-nic",
                        address=f"{plan.nic_gateway}/{plan.nic_ip.network.prefixlen}")
        g.add_edge(nic, up_nic, kind="wire")
    up_br = _iface(g, UPSTREAM_NS, UPSTREAM_BRIDGE, role="upstream-bridge",
                   address=f"{plan.upstream_router}/{plan.upstream_subnet.prefixlen}")
    for c in plan.containers.values():
        ns = f"ns:c:{c.name}"
        g.add_node(ns, kind="ns", role="container", label=c.name, ip=str(c.ip))
        for e in c.endpoints:
            net = plan.networks[e.network]
            inner = _iface(g, ns, e.ifname, role="container-eth", address=f"{e.ip}/{net.subnet.prefixlen}",
                           mac=e.mac, network=e.network)
            port = f"if:host:{e.veth}"
            g.add_node(port, kind="iface", ns=HOST_NS, name=e.veth, role="veth", captured=True,
                       container=c.name, network=e.network)
            g.add_edge(inner, port, kind="veth")
            g.add_edge(port, bridges[e.network], kind="bridge-port")
    for name, mode in plan.modes.items():
        if mode == "none":   # a namespace with only lo: no edge to anything
            g.add_node(f"ns:c:{name}", kind="ns", role="container", label=name, mode="none")
    for name, ip in plan.externals.items():
        ns = f"ns:x:{name}"
        g.add_node(ns, kind="ns", role="external", label=name, ip=str(ip))
        if plan.on_lan(name) and plan.home_lan is not None:
            inner = _iface(g, ns, "eth0", role="external-eth", address=f"{ip}/{plan.home_lan.network.prefixlen}")
            port = _iface(g, HOME_NS, f"lan-{name}"[:15], role="home-lan-port")
            g.add_edge(inner, port, kind="veth")
            g.add_edge(port, f"if:home:{HOME_LAN_BRIDGE}", kind="bridge-port")
            continue
        inner = _iface(g, ns, "eth0", role="external-eth", address=f"{ip}/{plan.upstream_subnet.prefixlen}")
        port = _iface(g, UPSTREAM_NS, f"x-{name}"[:15], role="upstream-port")
        g.add_edge(inner, port, kind="veth")
        g.add_edge(port, up_br, kind="bridge-port")
    return g


def path_interfaces(g: nx.Graph, src_ns: str, dst_ns: str, src_if: str | None = None,
                    dst_if: str | None = None) -> list[tuple[str, str | None, bool]]:
    """Everything crossed from src_ns to dst_ns, in order: interfaces as (namespace, interface
    name, seen by a capture on it) and the namespaces routed through on the way as
    (namespace, None, False).  A bridge crossed port-to-port (switched, not routed) is not seen
    on the bridge device.  Containers never forward (Docker leaves ip_forward off in them), so
    no path passes through another container; `src_if`/`dst_if` pin the interface a
    multi-homed container sends or receives by.  No path: []."""
    def keep(n: str) -> bool:
        a = g.nodes[n]
        if a["kind"] == "ns":
            return n in (src_ns, dst_ns) or a.get("role") != "container"
        for ns, pinned in ((src_ns, src_if), (dst_ns, dst_if)):
            if pinned is not None and a.get("ns") == ns and a.get("name") != pinned:
                return False
        return True
    try:
        nodes = nx.shortest_path(nx.subgraph_view(g, filter_node=keep), src_ns, dst_ns)
    except (nx.NetworkXNoPath, nx.NodeNotFound):
        return []
    out: list[tuple[str, str | None, bool]] = []
    for i, n in enumerate(nodes):
        a = g.nodes[n]
        if a["kind"] != "iface":
            if 0 < i < len(nodes) - 1:
                out.append((n, None, False))
            continue
        seen = bool(a.get("captured"))
        if a.get("role") == "bridge":
            prev_k = g.nodes[nodes[i - 1]]["kind"] if i > 0 else ""
            next_k = g.nodes[nodes[i + 1]]["kind"] if i + 1 < len(nodes) else ""
            seen = seen and "ns" in (prev_k, next_k)
        out.append((a["ns"], a["name"], seen))
    return out

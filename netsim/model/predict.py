"""What the model says each step will show: the path, the rewrite at each hop, the conntrack
entry and the values the scenario's expectations talk about.  Pure."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx

from ..scenario.loader import split_endpoint
from ..scenario.schema import Scenario, Step
from .addressing import Endpoint, Plan
from .addressing import plan as make_plan
from .nat import NatState, Publication, find_publication, publications
from .topology import HOME_NS, HOME_WAN, HOST_NS, build_graph, ns_of, path_interfaces

__all__ = ["TuplePattern", "HopPrediction", "StepPrediction", "Prediction", "predict"]

_PROTO = {"http_get": "tcp", "tcp_connect": "tcp", "udp": "udp", "ping": "icmp"}


@dataclass(frozen=True)
class TuplePattern:
    """A 5-tuple where a port may be unknown (None: any)."""

    proto: str
    src: str
    sport: int | None
    dst: str
    dport: int | None

    def reversed(self) -> "TuplePattern":
        return TuplePattern(self.proto, self.dst, self.dport, self.src, self.sport)

    def matches(self, t: Any) -> bool:
        return (t.proto == self.proto and t.src == self.src
                and t.dst == self.dst
                and (self.sport is None or t.sport == self.sport)
                and (self.dport is None or t.dport == self.dport))

    def __str__(self) -> str:
        sp = "*" if self.sport is None else self.sport
        dp = "*" if self.dport is None else self.dport
        if self.proto == "icmp":
            return f"icmp {self.src} -> {self.dst} id={sp}"
        return f"{self.proto} {self.src}:{sp} -> {self.dst}:{dp}"


@dataclass(frozen=True)
class HopPrediction:
    iface: str
    tuple: TuplePattern
    direction: str          # "forward" | "reply"


@dataclass(frozen=True)
class StepPrediction:
    step: str
    sender: str
    receiver: str | None            # who finally gets the packets (None: nobody / unknown)
    flow: TuplePattern              # as the sender sends it
    forward: tuple[HopPrediction, ...]
    reply: tuple[HopPrediction, ...]
    conntrack: tuple[TuplePattern, TuplePattern] | None   # (original, reply) in the host's table
    nat: tuple[str, ...]            # "dnat", "snat"
    reply_expected: bool
    values: dict[str, str] = field(default_factory=dict)  # expectation key -> predicted value
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prediction:
    scenario: str
    plan: Plan
    graph: nx.Graph
    steps: tuple[StepPrediction, ...]

    def step(self, name: str) -> StepPrediction:
        for s in self.steps:
            if s.step == name:
                return s
        raise KeyError(name)


def _fmt(ip: str, port: int | None) -> str:
    return ip if port is None else f"{ip}:{'*' if port is None else port}"


def _endpoint_value(ip: str, port: int | None) -> str:
    return f"{ip}:{port}" if port is not None else f"{ip}:?"


def _listens(s: Scenario, plan: Plan, name: str, proto: str, port: int | None) -> bool:
    """Whether something in `name`'s network namespace answers proto/port: an external's
    service, or any container in that namespace (its own, or one joined with network_mode)."""
    for x in s.externals:
        if x.name == name:
            if proto == "icmp":
                return True
            want = {"tcp": ("http", "tcp_echo"), "udp": ("udp_echo",)}[proto]
            return any(sv.port == port and sv.kind in want for sv in x.services)
    owner = plan.netns_owner(name) if name in plan.containers or name in plan.modes else name
    for c in s.containers:
        if plan.netns_owner(c.name) != owner:
            continue
        if proto == "icmp":
            return True
        if port == c.ready_port or any(p.container_port == port and p.proto == proto for p in c.publish):
            return True
    return False


def _host_listener(s: Scenario, plan: Plan, proto: str, port: int | None) -> str | None:
    """A container in the Docker host's network namespace (network_mode host) listening there."""
    for c in s.containers:
        if plan.modes.get(c.name) and plan.netns_owner(c.name) == "host" and proto == "tcp" and port == c.ready_port:
            return c.name
    return None


def _source(plan: Plan, sender: str, dst_ip: str) -> tuple[str | None, Endpoint | None]:
    """The address a sender's packets carry, chosen by route (loopback, a bridge, the NIC), and
    for a container the endpoint it leaves by; (None, None): no route."""
    dst = ipaddress.IPv4Address(dst_ip)
    if sender in plan.containers:
        c = plan.containers[sender]
        for e in c.endpoints:
            if dst == e.ip:
                return str(dst), None
        for e in c.endpoints:
            if dst in plan.networks[e.network].subnet:
                return str(e.ip), e
        gw = c.on(c.gateway_network) if c.gateway_network else None
        return (str(gw.ip), gw) if gw else (None, None)
    if sender in plan.modes:     # network_mode none: only lo
        return (str(dst), None) if dst.is_loopback else (None, None)
    if sender != "host":
        return str(plan.address_of(sender)), None
    if dst.is_loopback:
        return str(dst), None
    net = plan.network_of_ip(dst)
    if net is not None:
        return str(net.gateway), None
    return str(plan.nic_ip.ip), None


def _hops(path: list[tuple[str, str | None, bool]], flow: TuplePattern, after: TuplePattern
          ) -> list[HopPrediction]:
    """NAT happens in the host's stack: hops before it carry the original tuple, hops after it
    the translated one (DNAT in PREROUTING/OUTPUT, SNAT in POSTROUTING)."""
    out: list[HopPrediction] = []
    passed_host = False
    for ns, name, seen in path:
        if name is None:
            passed_host = passed_host or ns == HOST_NS
        elif seen:
            out.append(HopPrediction(name, after if passed_host else flow, "forward"))
    return out


def _deSNAT(after: TuplePattern, flow: TuplePattern, brnf: bool) -> TuplePattern:
    """A reply entering a bridge from one of its ports: with br_netfilter the kernel has already
    undone the SNAT there (the destination is the original source); without it, nothing yet."""
    r = after.reversed()
    return replace(r, dst=flow.src, dport=flow.sport) if brnf else r


def _predict_step(s: Scenario, plan: Plan, g: nx.Graph, st: Step, nat: NatState,
                  pubs: list[Publication], home_nat: NatState) -> StepPrediction:
    proto = _PROTO[st.send]
    target, port = split_endpoint(st.to)
    dst_ip = str(plan.address_of(target))
    sender = plan.netns_owner(st.from_) if st.from_ in plan.modes else st.from_
    src_ip, src_ep = _source(plan, sender, dst_ip)
    sport = st.sport if proto != "icmp" else None
    flow = TuplePattern(proto, src_ip or "0.0.0.0", sport, dst_ip, port)
    notes: list[str] = []
    sender_kind = "container" if sender in plan.containers else (
        "external" if sender in plan.externals else "none" if sender in plan.modes else "host")
    dst = ipaddress.IPv4Address(dst_ip)
    gateways = {n.gateway for n in plan.networks.values()}
    to_host = dst == plan.nic_ip.ip or dst.is_loopback or dst in gateways
    src_if = src_ep.ifname if src_ep else None
    dst_net = plan.network_of_ip(dst)

    receiver: str | None = plan.owner_of(dst_ip)
    after = flow
    forward: list[HopPrediction] = []
    reply: list[HopPrediction] | None = None     # None: the reverse of forward
    natk: list[str] = []
    reply_ok = True
    conntrack_here = True
    src_ns = ns_of(sender, plan)
    brnf = s.host.bridge_nf_call_iptables
    ct_after: TuplePattern | None = None   # the host's reply tuple when it differs from `after`
    behind_home = (plan.home_lan is not None and sender_kind == "external" and not plan.on_lan(sender)
                   and (dst in plan.home_lan.network or dst_net is not None))

    def dst_if_of(name: str | None) -> str | None:
        c = plan.containers.get(name or "")
        return next((e.ifname for e in c.endpoints if e.ip == dst), None) if c else None

    pub = find_publication(pubs, proto, dst_ip, port) if to_host and proto != "icmp" else None
    if src_ip is None:
        receiver, reply_ok, conntrack_here = None, False, False
        notes.append(f"{st.from_} has no route to {dst_ip}" + (
            " (network_mode none: only lo)" if sender_kind == "none" else
            " (internal networks give no default route)"))
    elif behind_home:
        receiver, reply_ok, conntrack_here = None, False, False
        notes.append("the internet has no route to the home LAN's private addresses")
    elif to_host and proto != "icmp" and pub is None:
        listener = _host_listener(s, plan, proto, port) if dst == plan.nic_ip.ip or dst.is_loopback else None
        # nothing is published there: the host itself answers (TCP RST / ICMP port unreachable),
        # or a container sharing the host's network namespace (network_mode host) listens
        receiver, reply_ok = listener or "host", listener is not None
        if sender_kind != "host":
            forward = _hops(path_interfaces(g, src_ns, HOST_NS, src_if), flow, flow)
        if pub is None and any(p.proto == proto and p.host_port == port for p in pubs):
            notes.append(f"{dst_ip}:{port} is published on another host address only")
    elif pub is not None:
        c = plan.containers[pub.container]
        cep = c.on(pub.network)
        assert cep is not None
        net = plan.networks[pub.network]
        receiver = pub.container
        natk.append("dnat")
        dnat_dst = (str(pub.container_ip), pub.container_port)
        if sender_kind == "external":
            after = replace(flow, dst=dnat_dst[0], dport=dnat_dst[1])
            forward = _hops(path_interfaces(g, src_ns, ns_of(pub.container, plan), None, cep.ifname), flow, after)
        elif sender_kind == "host":
            # OUTPUT DNAT, then POSTROUTING MASQUERADE of a LOCAL source out of the bridge
            natk.append("snat")
            after = TuplePattern(proto, str(net.gateway), sport, *dnat_dst)
            forward = [HopPrediction(net.bridge, after, "forward"), HopPrediction(cep.veth, after, "forward")]
            reply = [HopPrediction(cep.veth, after.reversed(), "reply"),
                     HopPrediction(net.bridge, _deSNAT(after, flow, brnf), "reply")]
        elif sender == pub.container and src_ep is not None and src_ep.network == pub.network:
            # hairpin to itself: DNAT back to the sender, MASQUERADE -s C -d C to the gateway,
            # and the frame leaves by the port it came in: only in hairpin mode
            natk.append("snat")
            after = TuplePattern(proto, str(net.gateway), sport, *dnat_dst)
            dnat_only = replace(flow, dst=dnat_dst[0], dport=dnat_dst[1])
            if brnf:
                # br_netfilter NATs at the bridge port: the bridge already sees the DNAT, and the
                # frame is bridged straight back (SNATed) without being routed
                forward = [HopPrediction(cep.veth, flow, "forward"), HopPrediction(net.bridge, dnat_only, "forward")]
                reply = [HopPrediction(cep.veth, after.reversed(), "reply"),
                         HopPrediction(net.bridge, _deSNAT(after, flow, brnf), "reply"),
                         HopPrediction(cep.veth, flow.reversed(), "reply")]
            else:
                forward = [HopPrediction(cep.veth, flow, "forward"), HopPrediction(net.bridge, flow, "forward"),
                           HopPrediction(net.bridge, after, "forward")]
                reply = [HopPrediction(cep.veth, after.reversed(), "reply"),
                         HopPrediction(net.bridge, after.reversed(), "reply"),
                         HopPrediction(net.bridge, flow.reversed(), "reply"),
                         HopPrediction(cep.veth, flow.reversed(), "reply")]
            if not brnf:
                # routed: the frame comes from the bridge device itself, so the port it goes
                # out by is not the one it came in by — no hairpin mode needed (measured)
                forward.append(HopPrediction(cep.veth, after, "forward"))
            elif s.host.hairpin_mode:
                forward.append(HopPrediction(cep.veth, after, "forward"))
            else:
                # dropped by the bridge before POSTROUTING: the conntrack entry is never
                # confirmed, so no NEW event either (measured)
                reply_ok, conntrack_here = False, False
                notes.append("hairpin_mode is off: br_netfilter bridges the DNATed frame back to "
                             "the port it came in by, which the bridge refuses")
        elif src_ep is not None and src_ep.network == pub.network:
            # hairpin to a neighbour: DNAT, no SNAT (the neighbour sees the sender's address);
            # the reply is bridged straight back, so only br_netfilter can undo the DNAT
            after = replace(flow, dst=dnat_dst[0], dport=dnat_dst[1])
            forward = [HopPrediction(src_ep.veth, flow, "forward")]
            if not brnf:
                forward.append(HopPrediction(net.bridge, flow, "forward"))
            forward += [HopPrediction(net.bridge, after, "forward"), HopPrediction(cep.veth, after, "forward")]
            reply = [HopPrediction(cep.veth, after.reversed(), "reply"),
                     HopPrediction(src_ep.veth, flow.reversed() if brnf else after.reversed(), "reply")]
            if not brnf:
                reply_ok = False
                notes.append("bridge-nf-call-iptables=0: the bridged reply is not de-NATed, the "
                             f"sender gets it from {dnat_dst[0]}:{dnat_dst[1]} and resets")
        else:
            # a container on another network reaching a published port: DNAT, routed from its
            # bridge to the other (DOCKER accepts published ports), and MASQUERADE -s ITS_SUBNET
            # ! -o ITS_BRIDGE gives it the target bridge's address
            assert src_ep is not None
            sbr = plan.networks[src_ep.network].bridge
            natk.append("snat")
            dnat_only = replace(flow, dst=dnat_dst[0], dport=dnat_dst[1])
            after = TuplePattern(proto, str(net.gateway), sport, *dnat_dst)
            forward = [HopPrediction(src_ep.veth, flow, "forward"),
                       HopPrediction(sbr, dnat_only if brnf else flow, "forward"),
                       HopPrediction(net.bridge, after, "forward"), HopPrediction(cep.veth, after, "forward")]
            reply = [HopPrediction(cep.veth, after.reversed(), "reply"),
                     HopPrediction(net.bridge, _deSNAT(after, flow, brnf), "reply"),
                     HopPrediction(sbr, flow.reversed(), "reply"), HopPrediction(src_ep.veth, flow.reversed(), "reply")]
            notes.append(f"across networks through a published port: {pub.container} sees "
                         f"{pub.network}'s gateway {net.gateway}")
    elif sender_kind == "external" and dst_net is not None:
        receiver, reply_ok, conntrack_here = None, False, False
        notes.append("the ISP router has no route to the bridges' private subnets")
    elif sender_kind == "container" and dst_net is not None and src_ep is not None \
            and src_ep.network != dst_net.name:
        # another network's container: routed by the host, where Docker drops it (isolation)
        reply_ok, conntrack_here = False, False
        target_pub = receiver is not None and any(p.container == receiver and p.network == dst_net.name
                                                  for p in pubs)
        sbr = plan.networks[src_ep.network].bridge
        forward = [HopPrediction(src_ep.veth, flow, "forward")]
        if target_pub and brnf:
            notes.append(f"raw PREROUTING drops packets to {dst_ip} that do not come from {dst_net.bridge} "
                         "(br_netfilter runs it at the bridge port, before the bridge device sees them)")
        else:
            forward.append(HopPrediction(sbr, flow, "forward"))
            why = "DOCKER-INTERNAL" if dst_net.internal else f"DOCKER ! -i {dst_net.bridge} -o {dst_net.bridge} DROP"
            notes.append(f"networks are isolated: {why}" + (" (raw PREROUTING drop)" if target_pub else ""))
        receiver = None
    elif receiver is None and sender_kind != "external" and dst not in plan.upstream_subnet:
        reply_ok, conntrack_here = False, False
        notes.append(f"nobody has {dst_ip}")
    else:
        path = path_interfaces(g, src_ns, ns_of(receiver, plan), src_if, dst_if_of(receiver)) if receiver else []
        forward = []
        cur = flow
        masq_ok = src_ep is not None and not plan.networks[src_ep.network].internal
        for ns, name, seen in path:
            if name is None and ns == HOST_NS and sender_kind == "container" and s.host.masquerade and masq_ok \
                    and any(n == plan.nic for _, n, _ in path):
                # Docker's MASQUERADE out of the NIC
                natk.append("snat")
                port_, remapped = nat.masquerade(proto, cur.src, cur.sport, dst_ip, port)
                if remapped:
                    notes.append(f"source port {cur.sport} is taken towards {dst_ip}:{port}: the kernel remaps it")
                cur = replace(cur, src=str(plan.nic_ip.ip), sport=port_)
            elif name is None and ns == HOME_NS and plan.home_wan is not None and plan.home_lan is not None \
                    and ipaddress.IPv4Address(cur.src) in plan.home_lan.network \
                    and any(n == HOME_WAN for _, n, _ in path):
                # the home router's MASQUERADE out of its public side: the second NAT
                natk.append("snat-home")
                port_, remapped = home_nat.masquerade(proto, cur.src, cur.sport, dst_ip, port)
                if remapped:
                    notes.append(f"the home router remaps source port {cur.sport}")
                cur = replace(cur, src=str(plan.home_wan.ip), sport=port_)
            elif name is not None and seen:
                forward.append(HopPrediction(name, cur, "forward"))
        after = cur
        conntrack_here = any(ns == HOST_NS for ns, _, _ in path) and (
            s.host.bridge_nf_call_iptables or any(name is None and ns == HOST_NS for ns, name, _ in path))
        if conntrack_here:
            # the host's table: its own translation only (the home router keeps its own table)
            host_after = flow
            for h in forward:
                if h.iface == plan.nic:
                    host_after = replace(h.tuple, dst=flow.dst, dport=flow.dport)
            ct_after = host_after if "snat-home" in natk else after
    reply_expected = reply_ok and receiver not in (None, "host") and _listens(s, plan, receiver or "", proto, after.dport)
    if reply is None:
        reply = [HopPrediction(h.iface, h.tuple.reversed(), "reply") for h in reversed(forward)]
    if not reply_ok:
        reply = []
    ct_final = ct_after or after
    conntrack = (flow, ct_final.reversed()) if conntrack_here and (forward or sender_kind == "host") else None
    values: dict[str, str] = {"reply": str(reply_expected).lower()}
    nic_hop = next((h.tuple for h in forward if h.iface == plan.nic), after)
    values["snat"] = _endpoint_value(nic_hop.src, nic_hop.sport)
    values["dnat"] = _endpoint_value(after.dst, after.dport)
    values["server_sees"] = _endpoint_value(after.src, after.sport)
    return StepPrediction(st.name, st.from_, receiver, flow, tuple(forward),
                          tuple(reply) if reply_expected else (), conntrack, tuple(natk),
                          reply_expected, values, tuple(notes))


def predict(s: Scenario) -> Prediction:
    plan = make_plan(s)
    g = build_graph(plan)
    nat = NatState()
    pubs = publications(s, plan)
    home_nat = NatState()
    steps = tuple(_predict_step(s, plan, g, st, nat, pubs, home_nat) for st in s.steps)
    return Prediction(s.name, plan, g, steps)

"""What the model says each step will show: the path, the rewrite at each hop, the conntrack
entry and the values the scenario's expectations talk about.  Pure."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx

from ..scenario.loader import split_endpoint
from ..scenario.schema import Scenario, Step
from .addressing import Plan
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


def _listens(s: Scenario, name: str, proto: str, port: int | None) -> bool:
    for x in s.externals:
        if x.name == name:
            if proto == "icmp":
                return True
            want = {"tcp": ("http", "tcp_echo"), "udp": ("udp_echo",)}[proto]
            return any(sv.port == port and sv.kind in want for sv in x.services)
    for c in s.containers:
        if c.name == name:
            if proto == "icmp":
                return True
            return port == c.ready_port or any(p.container_port == port and p.proto == proto
                                               for p in c.publish)
    return False


def _source_ip(plan: Plan, sender: str, dst_ip: str) -> str:
    """The address a sender's packets carry: the host picks by route (loopback, docker0, NIC)."""
    if sender != "host":
        return str(plan.address_of(sender))
    dst = ipaddress.IPv4Address(dst_ip)
    if dst.is_loopback:
        return str(dst)
    if dst in plan.subnet:
        return str(plan.gateway)
    return str(plan.nic_ip.ip)


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
    """A reply entering docker0 from a bridge port: with br_netfilter the kernel has already
    undone the SNAT there (the destination is the original source); without it, nothing yet."""
    r = after.reversed()
    return replace(r, dst=flow.src, dport=flow.sport) if brnf else r


def _predict_step(s: Scenario, plan: Plan, g: nx.Graph, st: Step, nat: NatState,
                  pubs: list[Publication], home_nat: NatState) -> StepPrediction:
    proto = _PROTO[st.send]
    target, port = split_endpoint(st.to)
    dst_ip = str(plan.address_of(target))
    src_ip = _source_ip(plan, st.from_, dst_ip)
    sport = st.sport if proto != "icmp" else None
    flow = TuplePattern(proto, src_ip, sport, dst_ip, port)
    notes: list[str] = []
    sender_kind = "container" if st.from_ in plan.containers else (
        "external" if st.from_ in plan.externals else "host")
    dst = ipaddress.IPv4Address(dst_ip)
    to_host = dst == plan.nic_ip.ip or dst.is_loopback or dst == plan.gateway

    receiver: str | None = plan.owner_of(dst_ip)
    after = flow
    forward: list[HopPrediction] = []
    reply: list[HopPrediction] | None = None     # None: the reverse of forward
    natk: list[str] = []
    reply_ok = True
    conntrack_here = True
    src_ns = ns_of(st.from_, plan)
    brnf = s.host.bridge_nf_call_iptables
    ct_after: TuplePattern | None = None   # the host's reply tuple when it differs from `after`
    behind_home = (plan.home_lan is not None and sender_kind == "external" and not plan.on_lan(st.from_)
                   and (dst in plan.home_lan.network or dst in plan.subnet))

    pub = find_publication(pubs, proto, dst_ip, port) if to_host and proto != "icmp" else None
    if behind_home:
        receiver, reply_ok, conntrack_here = None, False, False
        notes.append("the internet has no route to the home LAN's private addresses")
    elif to_host and proto != "icmp" and pub is None:
        # nothing is published there: the host itself answers (TCP RST / ICMP port unreachable)
        receiver, reply_ok = "host", False
        if sender_kind != "host":
            forward = _hops(path_interfaces(g, src_ns, HOST_NS), flow, flow)
        if pub is None and any(p.proto == proto and p.host_port == port for p in pubs):
            notes.append(f"{dst_ip}:{port} is published on another host address only")
    elif pub is not None:
        c = plan.containers[pub.container]
        receiver = pub.container
        natk.append("dnat")
        dnat_dst = (str(pub.container_ip), pub.container_port)
        if sender_kind == "external":
            after = replace(flow, dst=dnat_dst[0], dport=dnat_dst[1])
            forward = _hops(path_interfaces(g, src_ns, ns_of(pub.container, plan)), flow, after)
        elif sender_kind == "host":
            # OUTPUT DNAT, then POSTROUTING MASQUERADE of a LOCAL source out of the bridge
            natk.append("snat")
            after = TuplePattern(proto, str(plan.gateway), sport, *dnat_dst)
            forward = [HopPrediction(plan.bridge, after, "forward"), HopPrediction(c.veth, after, "forward")]
            reply = [HopPrediction(c.veth, after.reversed(), "reply"),
                     HopPrediction(plan.bridge, _deSNAT(after, flow, brnf), "reply")]
        elif st.from_ == pub.container:
            # hairpin to itself: DNAT back to the sender, MASQUERADE -s C -d C to the gateway,
            # and the frame leaves by the port it came in: only in hairpin mode
            natk.append("snat")
            after = TuplePattern(proto, str(plan.gateway), sport, *dnat_dst)
            dnat_only = replace(flow, dst=dnat_dst[0], dport=dnat_dst[1])
            if brnf:
                # br_netfilter NATs at the bridge port: docker0 already sees the DNAT, and the
                # frame is bridged straight back (SNATed) without being routed
                forward = [HopPrediction(c.veth, flow, "forward"), HopPrediction(plan.bridge, dnat_only, "forward")]
                reply = [HopPrediction(c.veth, after.reversed(), "reply"),
                         HopPrediction(plan.bridge, _deSNAT(after, flow, brnf), "reply"),
                         HopPrediction(c.veth, flow.reversed(), "reply")]
            else:
                forward = [HopPrediction(c.veth, flow, "forward"), HopPrediction(plan.bridge, flow, "forward"),
                           HopPrediction(plan.bridge, after, "forward")]
                reply = [HopPrediction(c.veth, after.reversed(), "reply"),
                         HopPrediction(plan.bridge, after.reversed(), "reply"),
                         HopPrediction(plan.bridge, flow.reversed(), "reply"),
                         HopPrediction(c.veth, flow.reversed(), "reply")]
            if not brnf:
                # routed: the frame comes from the bridge device itself, so the port it goes
                # out by is not the one it came in by — no hairpin mode needed (measured)
                forward.append(HopPrediction(c.veth, after, "forward"))
            elif s.host.hairpin_mode:
                forward.append(HopPrediction(c.veth, after, "forward"))
            else:
                # dropped by the bridge before POSTROUTING: the conntrack entry is never
                # confirmed, so no NEW event either (measured)
                reply_ok, conntrack_here = False, False
                notes.append("hairpin_mode is off: br_netfilter bridges the DNATed frame back to "
                             "the port it came in by, which the bridge refuses")
        else:
            # hairpin to a neighbour: DNAT, no SNAT (the neighbour sees the sender's address);
            # the reply is bridged straight back, so only br_netfilter can undo the DNAT
            me = plan.containers[st.from_]
            after = replace(flow, dst=dnat_dst[0], dport=dnat_dst[1])
            forward = [HopPrediction(me.veth, flow, "forward")]
            if not brnf:
                forward.append(HopPrediction(plan.bridge, flow, "forward"))
            forward += [HopPrediction(plan.bridge, after, "forward"), HopPrediction(c.veth, after, "forward")]
            reply = [HopPrediction(c.veth, after.reversed(), "reply"),
                     HopPrediction(me.veth, flow.reversed() if brnf else after.reversed(), "reply")]
            if not brnf:
                reply_ok = False
                notes.append("bridge-nf-call-iptables=0: the bridged reply is not de-NATed, the "
                             f"sender gets it from {dnat_dst[0]}:{dnat_dst[1]} and resets")
    elif sender_kind == "external" and dst in plan.subnet:
        receiver, reply_ok, conntrack_here = None, False, False
        notes.append("the ISP router has no route to the bridge's private subnet")
    elif receiver is None and sender_kind != "external" and dst not in plan.upstream_subnet:
        reply_ok, conntrack_here = False, False
        notes.append(f"nobody has {dst_ip}")
    else:
        path = path_interfaces(g, src_ns, ns_of(receiver, plan)) if receiver else []
        forward = []
        cur = flow
        for ns, name, seen in path:
            if name is None and ns == HOST_NS and sender_kind == "container" and s.host.masquerade \
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
    reply_expected = reply_ok and receiver not in (None, "host") and _listens(s, receiver or "", proto, after.dport)
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

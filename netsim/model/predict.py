"""What the model says each step will show: the path, the rewrite at each hop, the conntrack
entry and the values the scenario's expectations talk about.  Pure."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from ..scenario.loader import split_endpoint
from ..scenario.schema import Scenario, Step
from .addressing import Plan
from .addressing import plan as make_plan
from .nat import NatState, publications
from .topology import HOST_NS, build_graph, ns_of, path_interfaces

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


def _predict_step(s: Scenario, plan: Plan, g: nx.Graph, st: Step, nat: NatState,
                  pubs: dict[tuple[str, int], object]) -> StepPrediction:
    proto = _PROTO[st.send]
    target, port = split_endpoint(st.to)
    src_ip = str(plan.address_of(st.from_))
    dst_ip = str(plan.address_of(target))
    sport = st.sport if proto != "icmp" else None
    flow = TuplePattern(proto, src_ip, sport, dst_ip, port)
    notes: list[str] = []

    # Where do the packets go, and what does the host's NAT do to them?
    receiver = plan.owner_of(dst_ip)
    dnat_to: tuple[str, int] | None = None
    from_outside = st.from_ in plan.externals
    if receiver == "host" and proto != "icmp" and port is not None:
        pub = pubs.get((proto, port))
        if pub is not None and from_outside:
            dnat_to = (str(pub.container_ip), pub.container_port)  # type: ignore[attr-defined]
            receiver = pub.container  # type: ignore[attr-defined]
        elif pub is not None:
            notes.append("hairpin to a published port is not modelled yet")
    src_ns = ns_of(st.from_, plan)
    dst_ns = ns_of(receiver, plan) if receiver else None
    hops = path_interfaces(g, src_ns, dst_ns) if dst_ns else []
    crosses_host = any(ns == HOST_NS for ns, _, _ in hops)  # routed, or bridged with br_netfilter
    leaves_by_nic = any(ns == HOST_NS and name == plan.nic for ns, name, _ in hops) \
        and st.from_ in plan.containers
    snat_port: int | None = None
    remapped = False
    if leaves_by_nic and s.host.masquerade:
        snat_port, remapped = nat.masquerade(proto, src_ip, sport, dst_ip, port)
        if remapped:
            notes.append(f"source port {sport} is taken towards {dst_ip}:{port}: the kernel remaps it")

    after = TuplePattern(
        proto,
        str(plan.nic_ip.ip) if leaves_by_nic and s.host.masquerade else src_ip,
        snat_port if leaves_by_nic and s.host.masquerade else sport,
        dnat_to[0] if dnat_to else dst_ip,
        dnat_to[1] if dnat_to else port,
    )
    # NAT happens in the host's stack: hops before it carry the original tuple, after it the
    # translated one (SNAT in POSTROUTING, DNAT in PREROUTING).
    forward: list[HopPrediction] = []
    passed_host = False
    for ns, name, seen in hops:
        if name is None:
            passed_host = passed_host or ns == HOST_NS
        elif seen:
            forward.append(HopPrediction(name, after if passed_host else flow, "forward"))
    reply: list[HopPrediction] = []
    for h in reversed(forward):
        reply.append(HopPrediction(h.iface, h.tuple.reversed(), "reply"))

    reply_expected = bool(receiver) and receiver != "host" and _listens(s, receiver or "", proto, after.dport)
    if receiver == "host":
        reply_expected = False
    conntrack = (flow, after.reversed()) if crosses_host else None
    natk = tuple(k for k, on in (("dnat", dnat_to is not None),
                                 ("snat", leaves_by_nic and s.host.masquerade)) if on)
    values: dict[str, str] = {"reply": str(reply_expected).lower()}
    if leaves_by_nic or from_outside or crosses_host:
        values["snat"] = _endpoint_value(after.src, after.sport)
    values["dnat"] = _endpoint_value(after.dst, after.dport)
    values["server_sees"] = _endpoint_value(after.src, after.sport)
    return StepPrediction(st.name, st.from_, receiver, flow, tuple(forward),
                          tuple(reply) if reply_expected else (), conntrack, natk,
                          reply_expected, values, tuple(notes))


def predict(s: Scenario) -> Prediction:
    plan = make_plan(s)
    g = build_graph(plan)
    nat = NatState()
    pubs = publications(s, plan)
    steps = tuple(_predict_step(s, plan, g, st, nat, pubs) for st in s.steps)  # type: ignore[arg-type]
    return Prediction(s.name, plan, g, steps)

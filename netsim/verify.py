"""Prediction vs observation -> Report.  Pure: works on a saved trace without root.

Two kinds of checks per step:
- **model**: each hop the model predicts (interface, tuple) was seen with that tuple; the
  conntrack entry's reply tuple is the predicted one; the model's value for each expectation
  key equals the observed value.
- **expect**: each expectation written in the scenario holds in the observation.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .model.addressing import Plan
from .model.predict import Prediction, StepPrediction, TuplePattern
from .scenario.loader import split_endpoint
from .scenario.schema import Scenario, Step
from .trace.records import ConntrackEvent, Journey, Packet

__all__ = ["Check", "Report", "StepRecord", "Observation", "verify", "resolve_endpoint"]


@dataclass(frozen=True)
class StepRecord:
    """What the run recorded about a step (from events.jsonl)."""

    name: str
    ok: bool
    started: float
    ended: float
    seen_as: str | None = None


@dataclass
class Observation:
    packets: list[Packet]
    journeys: list[Journey]
    conntrack: list[ConntrackEvent]
    steps: dict[str, StepRecord]
    complete: bool = True
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Check:
    step: str
    kind: str            # "expect" | "model"
    what: str            # "reply", "snat", "hop eth0 (forward)", "conntrack", ...
    expected: str        # the scenario's expectation ("" for model checks)
    predicted: str
    observed: str
    ok: bool


@dataclass
class Report:
    scenario: str
    checks: list[Check]
    complete: bool
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.complete and all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "ok": self.ok, "complete": self.complete,
                "problems": self.problems, "checks": [c.__dict__ for c in self.checks]}


def resolve_endpoint(ref: str, plan: Plan, sport: int | None = None) -> str:
    """`NAME[:PORT]` -> `IP[:PORT]`; `NAME:sport` stands for the port the sender used."""
    if ref.endswith(":sport"):
        ip = str(plan.address_of(ref.removesuffix(":sport")))
        return f"{ip}:{sport if sport is not None else '?'}"
    name, port = split_endpoint(ref)
    ip = str(plan.address_of(name))
    return f"{ip}:{port}" if port is not None else ip


def _bind(sp: StepPrediction, first: Packet | None) -> StepPrediction:
    """Fill the ports the model left open (an ephemeral source port, an ICMP echo id) with the
    one the sender actually used: the model predicts it is kept at every hop."""
    if first is None or sp.flow.sport is not None:
        return sp
    port = first.tuple.sport

    def b(t: TuplePattern) -> TuplePattern:
        return replace(t, sport=port if t.sport is None else t.sport,
                       dport=port if t.dport is None else t.dport)
    return replace(
        sp, flow=b(sp.flow),
        forward=tuple(replace(h, tuple=b(h.tuple)) for h in sp.forward),
        reply=tuple(replace(h, tuple=b(h.tuple)) for h in sp.reply),
        conntrack=(b(sp.conntrack[0]), b(sp.conntrack[1])) if sp.conntrack else None,
        values={k: v.replace(":?", f":{port}") for k, v in sp.values.items()})


def _same_endpoint(expected: str, observed: str) -> bool:
    if ":" not in expected:  # address only
        return observed.split(":")[0] == expected
    return observed == expected


def _in_window(p: Packet, rec: StepRecord | None) -> bool:
    if rec is None:
        return True
    return rec.started - 0.05 <= p.ts <= rec.ended + 0.5


def _fmt(p: Packet) -> str:
    t = p.tuple
    if t.proto == "icmp":
        return f"icmp {t.src} -> {t.dst} id={t.sport}"
    return f"{t.proto} {t.src}:{t.sport} -> {t.dst}:{t.dport}"


def _hop_check(sp: StepPrediction, pattern: TuplePattern, iface: str, direction: str,
               pkts: list[Packet]) -> Check:
    on_iface = [p for p in pkts if p.iface == iface and p.tuple.proto == pattern.proto]
    hit = next((p for p in on_iface if pattern.matches(p.tuple)), None)
    if hit is not None:
        observed = _fmt(hit)
    else:
        # what was there instead: the same flow seen with other addresses or ports
        def related(p: Packet) -> bool:
            t = p.tuple
            return ((t.dst == pattern.dst and (pattern.dport is None or t.dport == pattern.dport))
                    or (t.src == pattern.src and (pattern.sport is None or t.sport == pattern.sport))
                    or (t.src == pattern.dst and (pattern.dport is None or t.sport == pattern.dport)))
        other = next((p for p in on_iface if related(p)), None)
        observed = _fmt(other) if other else "not seen"
    return Check(sp.step, "model", f"hop {iface} ({direction})", "", str(pattern), observed, hit is not None)


def _first_packet(sp: StepPrediction, pkts: list[Packet]) -> Packet | None:
    if not sp.forward:
        return None
    h = sp.forward[0]
    return next((p for p in pkts if p.iface == h.iface and h.tuple.matches(p.tuple)), None)


def _journey_of(pkt: Packet | None, journeys: list[Journey]) -> Journey | None:
    if pkt is None:
        return None
    for j in journeys:
        for h in j.hops:
            if h.packet.iface == pkt.iface and h.packet.index == pkt.index:
                return j
    return None


def _observed_values(sp: StepPrediction, plan: Plan, pkts: list[Packet], journeys: list[Journey],
                     rec: StepRecord | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if rec is not None:
        out["reply"] = str(rec.ok).lower()
    first = _first_packet(sp, pkts)
    j = _journey_of(first, journeys)
    hops = [h.packet for h in j.hops] if j else []
    nic_hop = next((p for p in hops if p.iface == plan.nic), None)
    if nic_hop is None and sp.forward:
        # no journey: take the flow's first packet on the NIC towards the same destination
        want = next((h.tuple for h in sp.forward if h.iface == plan.nic), None)
        if want is not None:
            nic_hop = next((p for p in pkts if p.iface == plan.nic and p.tuple.proto == want.proto
                            and p.tuple.dst == want.dst and (want.dport is None or p.tuple.dport == want.dport)), None)
    if nic_hop is not None:
        out["snat"] = f"{nic_hop.tuple.src}:{nic_hop.tuple.sport}"
    # what the receiver got: the first packet of the flow on the last interface of the path
    # that is not the packet as sent (in a hairpin the sender's veth is also the receiver's)
    if sp.forward:
        h = sp.forward[-1]
        sent = sp.flow
        # (in a hairpin the sender's veth is also the receiver's: skip the packet as sent there;
        # elsewhere an un-NATed flow arrives as it was sent)
        hairpin = len(sp.forward) > 1 and h.iface == sp.forward[0].iface
        cands = [p for p in pkts if p.iface == h.iface and p.tuple.proto == h.tuple.proto
                 and not (hairpin and sent.matches(p.tuple))
                 and (h.tuple.sport is None or p.tuple.sport == h.tuple.sport)]
        exact = [p for p in cands if h.tuple.matches(p.tuple)]
        last = (exact or cands)[0] if (exact or cands) else None
        if last is not None:
            out["dnat"] = f"{last.tuple.dst}:{last.tuple.dport}"
            out["server_sees"] = f"{last.tuple.src}:{last.tuple.sport}"
    if rec is not None and rec.seen_as:
        out["server_sees"] = rec.seen_as   # the server's own word beats our inference
    return out


def _conntrack_check(sp: StepPrediction, events: list[ConntrackEvent]) -> Check | None:
    if sp.conntrack is None:
        return None
    orig, reply = sp.conntrack
    ev = next((e for e in events if e.kind in ("NEW", "UPDATE", "DUMP") and orig.matches(e.original)), None)
    if ev is None:
        return Check(sp.step, "model", "conntrack", "", f"{orig} | reply {reply}", "no entry", False)
    return Check(sp.step, "model", "conntrack", "", f"{orig} | reply {reply}",
                 f"{_ct(ev.original)} | reply {_ct(ev.reply)}", reply.matches(ev.reply))


def _ct(t: Any) -> str:
    return str(TuplePattern(t.proto, t.src, t.sport,
                            t.dst, t.dport))


def verify(scenario: Scenario, prediction: Prediction, obs: Observation) -> Report:
    checks: list[Check] = []
    plan = prediction.plan
    steps: dict[str, Step] = {s.name: s for s in scenario.steps}
    for sp in prediction.steps:
        st = steps[sp.step]
        rec = obs.steps.get(sp.step)
        pkts = [p for p in obs.packets if _in_window(p, rec)]
        first = _first_packet(sp, pkts)
        sp = _bind(sp, first)
        observed = _observed_values(sp, plan, pkts, obs.journeys, rec)
        # the scenario's expectations
        for key in ("reply", "snat", "dnat", "server_sees"):
            want = getattr(st.expect, key)
            if want is None:
                continue
            expected = str(want).lower() if key == "reply" else \
                resolve_endpoint(want, plan, first.tuple.sport if first else None)
            got = observed.get(key, "not observed")
            ok = got == expected if key == "reply" else _same_endpoint(expected, got)
            checks.append(Check(sp.step, "expect", key, expected, sp.values.get(key, "?"), got, ok))
        # the model against reality
        for h in sp.forward + sp.reply:
            checks.append(_hop_check(sp, h.tuple, h.iface, h.direction, pkts))
        ct = _conntrack_check(sp, obs.conntrack)
        if ct is not None:
            checks.append(ct)
        if rec is not None:
            checks.append(Check(sp.step, "model", "reply", "", str(sp.reply_expected).lower(),
                                str(rec.ok).lower(), sp.reply_expected == rec.ok))
    problems = list(obs.problems)
    return Report(prediction.scenario, checks, obs.complete, problems)

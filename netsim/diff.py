"""`netsim diff`: do two traces show the same NAT behaviour?  Pure: reads two trace directories.

Compared, step by step (a step's window runs from its begin to the next step's begin):
  * conntrack: per connection (its original tuple), its NAT history — the reply tuple it was
    created with and every change of it, whether it was answered / established, destroyed,
    left in the final table (TCP's closing states are timing, not NAT: see `_summary`);
  * hops: the distinct `interface tuple` appearances of the step's packets — every NAT rewrite
    shows as a tuple seen on one interface and its rewritten form on the next.  (Appearances,
    not whole journeys: how packets are stitched into journeys is a heuristic that can split a
    journey in one trace and not in the other; which tuples each interface carried is a fact.)
  * result: whether the sender got a reply, and the address the server saw it come from.

Normalised away first, because it legitimately differs from run to run or engine to engine:
  * interface names -> the model's names (manifest `interfaces[*].model_name`; Docker picks its
    own veth names);
  * link-local multicast (224.0.0.0/24: the IGMP reports a bridge's own stack sends when it
    comes up, at a moment that depends on the engine's timing): never routed, never NATed, left out;
  * MAC addresses, IP ids, TTLs, TCP flags, sequence numbers, packet counts, timestamps,
    conntrack ids and timeouts: not compared;
  * ephemeral ports: every port the scenario does not name (a step's `sport` or destination
    port, a published or service port, a ready port) is replaced, per step, by `*1`, `*2`, ...
    in the order the step's packets (then its conntrack events) first show it.  So a port kept
    by the NAT stays the same symbol on both sides of the rewrite, and a remapped port becomes a
    new symbol — in both traces alike when both NATs behave alike.  ICMP echo ids likewise.
"""
from __future__ import annotations

import bisect
import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .trace.records import ConntrackEvent, FiveTuple, Packet

__all__ = ["Difference", "TraceView", "DiffResult", "fixed_ports", "view_of", "compare", "diff_traces"]

BEFORE = "(before the steps)"
LAG_S = 2.0   # how far a conntrack event may trail the packet that created its connection
_LINK_LOCAL_MCAST = ipaddress.IPv4Network("224.0.0.0/24")


def _noise(t: FiveTuple) -> bool:
    try:
        return ipaddress.IPv4Address(t.dst) in _LINK_LOCAL_MCAST
    except ValueError:
        return False


@dataclass(frozen=True)
class Difference:
    step: str
    what: str        # "conntrack" | "hops" | "result" | "steps" | "scenario"
    key: str         # the connection, path or field concerned (normalised)
    a: str           # what trace A has there ("" = nothing)
    b: str

    def __str__(self) -> str:
        return f"{self.step}: {self.what}: {self.key}\n    A: {self.a or '(none)'}\n    B: {self.b or '(none)'}"


@dataclass
class TraceView:
    """The NAT-relevant content of one trace, normalised."""

    path: str
    engine: str
    scenario_sha256: str
    complete: bool
    steps: list[str]
    conntrack: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)   # step -> conn -> history
    hops: dict[str, set[str]] = field(default_factory=dict)                          # step -> "iface tuple"
    results: dict[str, str] = field(default_factory=dict)                            # step -> result
    ports: dict[str, dict[int, str]] = field(default_factory=dict)                   # step -> port -> symbol


@dataclass
class DiffResult:
    a: TraceView
    b: TraceView
    differences: list[Difference]
    notes: list[str]

    @property
    def same(self) -> bool:
        return not self.differences


def fixed_ports(scenario_text: str | None) -> set[int] | None:
    """Ports the scenario names (they are compared as they are); None: unknown scenario."""
    if not scenario_text:
        return None
    from .errors import ScenarioError
    from .scenario.loader import parse_scenario, split_endpoint
    try:
        s = parse_scenario(scenario_text, "<trace>").scenario
    except ScenarioError:
        return None
    out: set[int] = set()
    for c in s.containers:
        for p in c.publish:
            for hp, cp in p.pairs():
                out |= {hp, cp}
        if c.ready_port:
            out.add(c.ready_port)
    for x in s.externals:
        out |= {sv.port for sv in x.services}
    for st in s.steps:
        if st.sport:
            out.add(st.sport)
        try:
            port = split_endpoint(st.to)[1]
        except ValueError:
            port = None
        if port:
            out.add(port)
    return out


class _Ports:
    """Per-step numbering of ephemeral ports."""

    def __init__(self, fixed: set[int] | None) -> None:
        self.fixed = fixed
        self.symbols: dict[int, str] = {}

    def is_fixed(self, port: int) -> bool:
        if port == 0:
            return True
        return port in self.fixed if self.fixed is not None else port < 32768  # Linux ephemeral: 32768+

    def see(self, port: int) -> None:
        if not self.is_fixed(port) and port not in self.symbols:
            self.symbols[port] = f"*{len(self.symbols) + 1}"

    def name(self, port: int) -> str:
        if self.is_fixed(port):
            return str(port)
        self.see(port)
        return self.symbols[port]

    def tuple(self, t: FiveTuple) -> str:
        if t.proto == "icmp":
            return f"icmp {t.src} -> {t.dst} id={self.name(t.sport)}"
        return f"{t.proto} {t.src}:{self.name(t.sport)} -> {t.dst}:{self.name(t.dport)}"


def _windows(steps: list[tuple[str, float]]) -> list[tuple[str, float, float]]:
    ordered = sorted(steps, key=lambda s: s[1])
    out = [(BEFORE, float("-inf"), ordered[0][1] if ordered else float("inf"))]
    for i, (name, begin) in enumerate(ordered):
        end = ordered[i + 1][1] if i + 1 < len(ordered) else float("inf")
        out.append((name, begin, end))
    return out


def _step_of(ts: float, windows: list[tuple[str, float, float]]) -> str:
    for name, begin, end in windows:
        if begin <= ts < end:
            return name
    return BEFORE


def _summary(events: list[ConntrackEvent], pn: _Ports) -> tuple[str, ...]:
    """A connection's NAT history: the binding it was created with, every change of it, and
    the milestones that decide its fate — answered (UDP/ICMP) or established (TCP), destroyed,
    still in the final table.  TCP's closing states are left out: whether FIN_WAIT shows
    between ESTABLISHED and TIME_WAIT depends on which side's FIN the kernel saw first."""
    out: list[str] = []
    reply: FiveTuple | None = None
    for e in events:
        if e.kind == "DUMP":
            continue
        if reply is None:
            out.append(f"{'NEW' if e.kind == 'NEW' else 'first seen as ' + e.kind} reply {pn.tuple(e.reply)}")
        elif e.reply != reply:
            out.append(f"{e.kind} reply {pn.tuple(e.reply)}")
        reply = e.reply
    live = [e for e in events if e.kind != "DUMP"]
    if any(e.state == "ESTABLISHED" for e in live):
        out.append("established")
    elif any("UNREPLIED" not in e.status for e in live if e.kind != "NEW"):
        out.append("answered")
    if any(e.kind == "DESTROY" for e in events):
        out.append("destroyed")
    dump = [e for e in events if e.kind == "DUMP"]
    if dump:
        if reply is None:
            out.append(f"in the final table only, reply {pn.tuple(dump[0].reply)}")
        elif dump[0].reply != reply:
            out.append(f"in the final table with reply {pn.tuple(dump[0].reply)}")
        else:
            out.append("in the final table")
    return tuple(out)


def view_of(trace_dir: Path) -> TraceView:
    """Read and normalise one trace (raises TraceError, exit 2, when it is not one)."""
    from .experiment import load_observation
    from .trace.store import TraceReader

    reader = TraceReader(trace_dir)
    m = reader.manifest
    obs = load_observation(trace_dir)     # packets carry the model's interface names
    begins: dict[str, float] = {}
    for ev in reader.steps():
        if ev.get("phase") == "begin":
            begins.setdefault(str(ev["name"]), float(ev["ts"]))
    windows = _windows(list(begins.items()))
    fixed = fixed_ports((m.get("scenario") or {}).get("text"))
    view = TraceView(str(trace_dir), str(m.get("engine", "?")), str(m.get("scenario_sha256", "")),
                     bool(m.get("complete")), [w[0] for w in windows[1:]])
    ports: dict[str, _Ports] = defaultdict(lambda: _Ports(fixed))

    # packets first: they show a port before conntrack confirms its entry
    by_step: dict[str, list[Packet]] = defaultdict(list)
    for p in obs.packets:
        if _noise(p.tuple):
            continue
        by_step[_step_of(p.ts, windows)].append(p)
    for step, pkts in by_step.items():
        for p in pkts:
            ports[step].see(p.tuple.sport)
            ports[step].see(p.tuple.dport)
        for p in pkts:
            view.hops.setdefault(step, set()).add(f"{p.iface} {ports[step].tuple(p.tuple)}")

    # conntrack: a connection belongs to the step of the packet that created it.  An event's
    # time is when `conntrack -E` read it, which under load can lag past the next step's begin;
    # the packets carry the kernel's time.  So: the first packet with the connection's original
    # tuple in the LAG_S before its first event, else the event's own time.  The final dump
    # joins its connection's step.
    created_at: dict[FiveTuple, list[float]] = defaultdict(list)
    for p in obs.packets:
        created_at[p.tuple].append(p.ts)
    for times in created_at.values():
        times.sort()
    kept = [e for e in obs.conntrack if not _noise(e.original)]
    live = sorted((e for e in kept if e.kind != "DUMP"), key=lambda e: e.ts)
    conn_step: dict[FiveTuple, str] = {}
    per_conn: dict[FiveTuple, list[ConntrackEvent]] = defaultdict(list)
    for e in live:
        if e.original not in conn_step:
            times = created_at.get(e.original, [])
            i = bisect.bisect_left(times, e.ts - LAG_S)
            created = times[i] if i < len(times) and times[i] <= e.ts else e.ts
            conn_step[e.original] = _step_of(created, windows)
        per_conn[e.original].append(e)
    for e in kept:
        if e.kind == "DUMP":
            conn_step.setdefault(e.original, "(final table)")
            per_conn[e.original].append(e)
    seqs: dict[str, dict[str, tuple[str, ...]]] = defaultdict(dict)
    for orig, events in per_conn.items():
        step = conn_step[orig]
        pn = ports[step]
        for e in events:
            for port in (e.original.sport, e.original.dport, e.reply.sport, e.reply.dport):
                pn.see(port)
        seqs[step][pn.tuple(orig)] = _summary(events, pn)
    view.conntrack = dict(seqs)

    for name, rec in obs.steps.items():
        seen = rec.seen_as or ""
        if ":" in seen:
            ip, _, port_text = seen.rpartition(":")
            seen = f"{ip}:{ports[name].name(int(port_text))}" if port_text.isdigit() else seen
        view.results[name] = f"reply={str(rec.ok).lower()}" + (f" seen_as={seen}" if seen else "")
    view.ports = {s: {p: sym for p, sym in pn.symbols.items()} for s, pn in ports.items()}
    return view


def _seq(events: Iterable[str]) -> str:
    return " ; ".join(events)


def compare(a: TraceView, b: TraceView) -> DiffResult:
    diffs: list[Difference] = []
    notes: list[str] = []
    if a.scenario_sha256 != b.scenario_sha256:
        diffs.append(Difference("-", "scenario", "sha256", a.scenario_sha256[:12], b.scenario_sha256[:12]))
    if a.steps != b.steps:
        diffs.append(Difference("-", "steps", "order", ", ".join(a.steps), ", ".join(b.steps)))
    for v in (a, b):
        if not v.complete:
            notes.append(f"{v.path}: the trace is incomplete (capture drops or a conntrack overflow)")
    order = list(dict.fromkeys([BEFORE, *a.steps, *b.steps, "(final table)"]))
    for step in order:
        ra, rb = a.results.get(step, ""), b.results.get(step, "")
        if ra != rb:
            diffs.append(Difference(step, "result", "sender", ra, rb))
        ca, cb = a.conntrack.get(step, {}), b.conntrack.get(step, {})
        for conn in sorted(set(ca) | set(cb)):
            if ca.get(conn) != cb.get(conn):
                diffs.append(Difference(step, "conntrack", conn, _seq(ca.get(conn, ())), _seq(cb.get(conn, ()))))
        ha, hb = a.hops.get(step, set()), b.hops.get(step, set())
        for hop in sorted(ha - hb):
            diffs.append(Difference(step, "hops", hop.split(" ", 1)[0], hop, ""))
        for hop in sorted(hb - ha):
            diffs.append(Difference(step, "hops", hop.split(" ", 1)[0], "", hop))
    return DiffResult(a, b, diffs, notes)


def diff_traces(a_dir: Path, b_dir: Path) -> DiffResult:
    return compare(view_of(a_dir), view_of(b_dir))

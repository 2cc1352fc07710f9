"""The NAT table, two ways: from conntrack events and from rewrites seen on the wire.  Pure.

A connection's conntrack entry has an *original* tuple (as the first packet arrived) and a
*reply* tuple (what a reply must look like when it arrives).  It yields

* an ``snat`` row when the reply goes back to another address/port than the original came
  from: inside = original source, outside = reply destination, remote = original destination;
* a ``dnat`` row when the reply comes from another address/port than was addressed:
  inside = reply source (the container), outside = original destination (host:published),
  remote = original source.

From packets, each hop of a journey whose 5-tuple changed is one translation ``before ->
after``; it implies the entry (original = before, reply = after reversed) when it is the
connection's first observed translation (the original direction), and the same entry seen from
the reply side otherwise, so both directions of a connection collapse into one entry and then
into the same rows.  :func:`cross_check` compares the two derivations.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from netsim.trace.records import ConntrackEvent, FiveTuple, Journey, NatBinding

__all__ = [
    "NatTransition",
    "binding_key",
    "bindings_for_entry",
    "bindings_from_conntrack",
    "bindings_from_journeys",
    "cross_check",
    "transitions",
]


def bindings_for_entry(original: FiveTuple, reply: FiveTuple, first_seen: float,
                       last_seen: float, state: str = "",
                       source: str = "conntrack") -> list[NatBinding]:
    """The NAT-table rows one conntrack entry (original, reply) stands for (0, 1 or 2)."""
    rows = []
    if (reply.dst, reply.dport) != (original.src, original.sport):
        rows.append(NatBinding(original.proto, (original.src, original.sport),
                               (reply.dst, reply.dport), (original.dst, original.dport),
                               "snat", first_seen, last_seen, state, source))
    if (reply.src, reply.sport) != (original.dst, original.dport):
        rows.append(NatBinding(original.proto, (reply.src, reply.sport),
                               (original.dst, original.dport), (original.src, original.sport),
                               "dnat", first_seen, last_seen, state, source))
    return rows


def binding_key(b: NatBinding) -> tuple[object, ...]:
    """What two derivations must agree on (not times, state or source)."""
    return (b.kind, b.proto, b.inside, b.outside, b.remote)


def _sort(rows: list[NatBinding]) -> list[NatBinding]:
    return sorted(rows, key=lambda b: (b.first_seen, b.kind, b.proto, b.inside, b.remote))


def bindings_from_conntrack(events: Iterable[ConntrackEvent]) -> list[NatBinding]:
    """One row per NATed connection (per direction of NAT) among the events."""
    conns: dict[tuple[object, ...], list[ConntrackEvent]] = {}
    for ev in events:
        conns.setdefault((ev.ct_id, ev.original, ev.reply), []).append(ev)
    rows: list[NatBinding] = []
    for evs in conns.values():
        evs.sort(key=lambda e: e.ts)
        state = next((e.state for e in reversed(evs) if e.state), "")
        first, last = evs[0], evs[-1]
        rows.extend(bindings_for_entry(first.original, first.reply, first.ts, last.ts, state))
    return _sort(rows)


def bindings_from_journeys(journeys: Iterable[Journey]) -> list[NatBinding]:
    """The same rows, derived from translations observed between consecutive hops."""
    # entry key: the unordered pair {original, reply}; value: (original, reply, first, last)
    entries: dict[frozenset[FiveTuple], list[object]] = {}
    order: list[frozenset[FiveTuple]] = []
    rewrites = []
    for j in journeys:
        for prev, hop in zip(j.hops, j.hops[1:], strict=False):
            before, after = prev.packet.tuple, hop.packet.tuple
            if before != after:
                rewrites.append((hop.packet.ts, before, after))
    rewrites.sort(key=lambda r: r[0])
    for ts, before, after in rewrites:
        key = frozenset((before, after.reversed()))
        entry = entries.get(key)
        if entry is None:
            entries[key] = [before, after.reversed(), ts, ts]
            order.append(key)
        else:
            entry[3] = ts
    rows: list[NatBinding] = []
    for key in order:
        original, reply, first, last = entries[key]
        rows.extend(bindings_for_entry(original, reply, first, last,  # type: ignore[arg-type]
                                       source="packets"))
    return _sort(rows)


def _describe(b: NatBinding) -> str:
    return (f"{b.kind} {b.proto} inside {b.inside[0]}:{b.inside[1]} "
            f"outside {b.outside[0]}:{b.outside[1]} remote {b.remote[0]}:{b.remote[1]}")


def cross_check(a: Sequence[NatBinding], b: Sequence[NatBinding]) -> list[str]:
    """Human-readable disagreements between two NAT tables; empty when they agree.

    Rows are compared on kind, protocol, inside, outside and remote; a row of one table with
    the same kind, protocol, inside and remote but another outside is reported as a different
    mapping, otherwise as missing from the other table.
    """
    name_a = a[0].source if a else "first"
    name_b = b[0].source if b else "second"
    if name_a == name_b:
        name_a, name_b = f"{name_a} (a)", f"{name_b} (b)"
    keys_a = {binding_key(x): x for x in a}
    keys_b = {binding_key(x): x for x in b}
    by_socket_b = {(x.kind, x.proto, x.inside, x.remote): x for x in b}
    problems: list[str] = []
    seen_socket: set[tuple[object, ...]] = set()
    for key, row in keys_a.items():
        if key in keys_b:
            continue
        sock = (row.kind, row.proto, row.inside, row.remote)
        other = by_socket_b.get(sock)
        if other is not None and binding_key(other) not in keys_a:
            seen_socket.add(sock)
            problems.append(f"{row.kind} {row.proto} {row.inside[0]}:{row.inside[1]} -> "
                            f"{row.remote[0]}:{row.remote[1]}: {name_a} maps it to "
                            f"{row.outside[0]}:{row.outside[1]}, {name_b} to "
                            f"{other.outside[0]}:{other.outside[1]}")
        else:
            problems.append(f"{_describe(row)}: in {name_a}, not in {name_b}")
    for key, row in keys_b.items():
        if key in keys_a or (row.kind, row.proto, row.inside, row.remote) in seen_socket:
            continue
        problems.append(f"{_describe(row)}: in {name_b}, not in {name_a}")
    return problems


@dataclass(frozen=True)
class NatTransition:
    """One conntrack event as a row of the NAT table's history."""

    ts: float
    kind: str                       # NEW | UPDATE | DESTROY | DUMP
    original: FiveTuple
    reply: FiveTuple
    state: str
    timeout: int | None
    status: tuple[str, ...]
    ct_id: int | None
    bindings: tuple[NatBinding, ...]   # the rows this entry stands for (empty: not NATed)

    @property
    def nat(self) -> bool:
        return bool(self.bindings)


def transitions(events: Iterable[ConntrackEvent], nat_only: bool = False) -> list[NatTransition]:
    """Conntrack events in time order, each with the NAT rows its entry stands for."""
    out = []
    for ev in sorted(events, key=lambda e: e.ts):
        rows = tuple(replace(r, state=ev.state) for r in
                     bindings_for_entry(ev.original, ev.reply, ev.ts, ev.ts, ev.state))
        if nat_only and not rows:
            continue
        out.append(NatTransition(ev.ts, ev.kind, ev.original, ev.reply, ev.state, ev.timeout,
                                 ev.status, ev.ct_id, rows))
    return out

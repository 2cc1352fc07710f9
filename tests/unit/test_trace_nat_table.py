"""nat_table.py: rows from conntrack and from the wire agree on the fixture; disagreements show."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from netsim.trace.journeys import build_journeys
from netsim.trace.nat_table import (
    bindings_for_entry,
    bindings_from_conntrack,
    bindings_from_journeys,
    cross_check,
    transitions,
)
from netsim.trace.records import ConntrackEvent, FiveTuple
from netsim.trace.store import TraceReader

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "trace_napt"


@pytest.fixture(scope="module")
def tables():
    reader = TraceReader(FIXTURE)
    journeys = build_journeys(reader.packets(), tie_order=reader.tie_order())
    return bindings_from_conntrack(reader.conntrack_events()), bindings_from_journeys(journeys)


def test_both_derivations_agree(tables):
    from_ct, from_wire = tables
    assert cross_check(from_ct, from_wire) == []
    assert len(from_ct) == len(from_wire) == 4
    assert {b.source for b in from_ct} == {"conntrack"}
    assert {b.source for b in from_wire} == {"packets"}


def test_rows_have_the_documented_shape(tables):
    from_ct, _ = tables
    by = {(b.kind, b.proto): b for b in from_ct}
    udp = by[("snat", "udp")]
    assert udp.inside == ("172.17.0.2", 40000) and udp.outside == ("203.0.113.2", 40000)
    assert udp.remote == ("198.51.100.10", 9000)
    dnat = by[("dnat", "tcp")]
    assert dnat.inside == ("172.17.0.2", 80) and dnat.outside == ("203.0.113.2", 8080)
    assert dnat.remote[0] == "198.51.100.20"
    assert by[("snat", "tcp")].state == "TIME_WAIT"
    icmp = by[("snat", "icmp")]
    assert icmp.inside[1] == icmp.outside[1] == icmp.remote[1]      # echo id preserved
    assert all(b.first_seen <= b.last_seen for b in from_ct)


def test_perturbed_table_disagrees(tables):
    from_ct, from_wire = tables
    moved = [replace(b, outside=(b.outside[0], 41000)) if b.proto == "udp" else b for b in from_wire]
    problems = cross_check(from_ct, moved)
    assert len(problems) == 1
    assert "172.17.0.2:40000" in problems[0] and "41000" in problems[0] and "40000" in problems[0]
    missing = cross_check(from_ct, [b for b in from_wire if b.kind != "dnat"])
    assert len(missing) == 1 and "dnat" in missing[0] and "not in packets" in missing[0]
    extra = cross_check(from_ct[1:], from_wire)
    assert len(extra) == 1 and "not in conntrack" in extra[0]


def test_transitions_in_time_order(tables):
    reader = TraceReader(FIXTURE)
    rows = transitions(reader.conntrack_events(), nat_only=True)
    assert [r.ts for r in rows] == sorted(r.ts for r in rows)
    udp = [r for r in rows if r.original.proto == "udp"]
    assert udp[0].kind == "NEW" and udp[0].status == ("UNREPLIED",) and udp[0].timeout == 30
    assert udp[1].kind == "UPDATE" and "UNREPLIED" not in udp[1].status
    tcp_states = [r.state for r in rows if r.original.proto == "tcp" and r.original.dport == 80
                  and r.kind != "DUMP"]
    assert tcp_states[:3] == ["SYN_SENT", "SYN_RECV", "ESTABLISHED"]
    assert all(r.nat for r in rows)
    plain = ConntrackEvent(0.5, "NEW", FiveTuple("udp", "172.17.0.2", 1, "172.17.0.1", 53),
                           FiveTuple("udp", "172.17.0.1", 53, "172.17.0.2", 1))
    everything = transitions([*reader.conntrack_events(), plain])
    assert everything[0].ts == 0.5 and not everything[0].nat      # tracked, not NATed
    assert len(transitions([plain], nat_only=True)) == 0


def test_hairpin_entry_gives_two_rows():
    orig = FiveTuple("tcp", "172.17.0.3", 4000, "203.0.113.2", 8080)
    reply = FiveTuple("tcp", "172.17.0.2", 80, "172.17.0.1", 4000)
    rows = bindings_for_entry(orig, reply, 1.0, 2.0)
    assert {r.kind for r in rows} == {"snat", "dnat"}
    snat = next(r for r in rows if r.kind == "snat")
    assert snat.inside == ("172.17.0.3", 4000) and snat.outside == ("172.17.0.1", 4000)
    plain = bindings_for_entry(orig, orig.reversed(), 1.0, 1.0)
    assert plain == []


def test_conntrack_rows_group_by_entry():
    o = FiveTuple("udp", "172.17.0.2", 1, "198.51.100.10", 2)
    r = FiveTuple("udp", "198.51.100.10", 2, "203.0.113.2", 1)
    evs = [ConntrackEvent(5.0, "UPDATE", o, r, ct_id=7), ConntrackEvent(1.0, "NEW", o, r, ct_id=7),
           ConntrackEvent(9.0, "DESTROY", o, r, ct_id=7)]
    [row] = bindings_from_conntrack(evs)
    assert (row.first_seen, row.last_seen) == (1.0, 9.0)

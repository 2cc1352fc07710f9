"""journeys.py on the real NAPT fixture and on hand-made packets (disambiguation cases)."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from netsim.trace import journeys
from netsim.trace.journeys import build_journeys, default_tie_order, match_key
from netsim.trace.records import FiveTuple, Packet
from netsim.trace.store import TraceReader

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "trace_napt"


@pytest.fixture(scope="module")
def fixture_journeys():
    reader = TraceReader(FIXTURE)
    packets = reader.packets()
    return packets, build_journeys(packets, tie_order=reader.tie_order())


def test_every_packet_in_exactly_one_journey(fixture_journeys):
    packets, journeys = fixture_journeys
    seen = [(h.packet.iface, h.packet.index) for j in journeys for h in j.hops]
    assert sorted(seen) == sorted((p.iface, p.index) for p in packets)
    assert [j.id for j in journeys] == list(range(len(journeys)))
    for j in journeys:
        assert [h.packet.ts_ns for h in j.hops] == sorted(h.packet.ts_ns for h in j.hops)
        assert j.hops[0].changed == {}
    nat = [j for j in journeys if j.first.tuple.proto in ("tcp", "udp", "icmp")]
    assert nat and all(len(j.hops) == 3 for j in nat)


def _find(journeys, proto, **where):
    for j in journeys:
        t = j.first.tuple
        if t.proto == proto and all(getattr(t, k) == v for k, v in where.items()):
            yield j


def test_snat_hop_between_docker0_and_eth0(fixture_journeys):
    _, journeys = fixture_journeys
    [udp] = list(_find(journeys, "udp", src="172.17.0.2", sport=40000))
    assert udp.interfaces == ("vethc2", "docker0", "eth0")
    assert udp.hops[1].changed == {}
    assert udp.hops[2].changed == {"src": ("172.17.0.2", "203.0.113.2"), "ttl": (64, 63)}
    assert udp.last.tuple == FiveTuple("udp", "203.0.113.2", 40000, "198.51.100.10", 9000)
    [reply] = list(_find(journeys, "udp", src="198.51.100.10", sport=9000))
    assert reply.interfaces == ("eth0", "docker0", "vethc2")
    assert reply.hops[1].changed == {"dst": ("203.0.113.2", "172.17.0.2"), "ttl": (63, 62)}
    syns = [j for j in _find(journeys, "tcp", src="172.17.0.2", dport=80) if j.first.tcp_flags == "S"]
    assert len(syns) == 1 and syns[0].hops[2].changed["src"] == ("172.17.0.2", "203.0.113.2")
    [ping] = [j for j in _find(journeys, "icmp", src="172.17.0.2") if j.first.icmp_type == 8]
    assert ping.hops[2].changed["src"] == ("172.17.0.2", "203.0.113.2")


def test_dnat_hop_between_eth0_and_docker0(fixture_journeys):
    _, journeys = fixture_journeys
    syn = [j for j in _find(journeys, "tcp", src="198.51.100.20", dport=8080)
           if j.first.tcp_flags == "S"]
    assert len(syn) == 1
    j = syn[0]
    assert j.interfaces == ("eth0", "docker0", "vethc2")
    assert j.hops[1].changed == {"dst": ("203.0.113.2", "172.17.0.2"), "dport": (8080, 80),
                                 "ttl": (63, 62)}
    assert j.last.tuple == FiveTuple("tcp", "198.51.100.20", j.first.tuple.sport, "172.17.0.2", 80)
    synack = [j for j in _find(journeys, "tcp", src="172.17.0.2", sport=80) if j.first.tcp_flags == "SA"]
    assert synack[0].hops[2].changed["sport"] == (80, 8080)


def test_equal_timestamps_ordered_by_role(fixture_journeys):
    """On this kernel a bridged frame keeps its port's receive time on docker0."""
    _, journeys = fixture_journeys
    ties = [j for j in journeys if j.hops[0].packet.ts_ns == j.hops[1].packet.ts_ns]
    assert ties                                   # UDP and ICMP from the container
    for j in ties:
        assert j.interfaces[:2] == ("vethc2", "docker0")
    assert default_tie_order(["eth0", "docker0", "veth12ab"]) == ["veth12ab", "docker0", "eth0"]


# ---- hand-made cases --------------------------------------------------------------------

def pkt(iface: str, t_us: float, src: str, sport: int, dst: str, dport: int, *, ttl: int = 64,
        ip_id: int = 0, payload: int = 7, proto: str = "udp", index: int = 0) -> Packet:
    ns = 1_800_000_000_000_000_000 + int(t_us * 1000)
    return Packet(ts=ns / 1e9, iface=iface, index=index, tuple=FiveTuple(proto, src, sport, dst, dport),
                  ip_id=ip_id, length=40, ttl=ttl, payload_hash=payload, ts_ns=ns)


C, GW, S = "172.17.0.2", "203.0.113.2", "198.51.100.10"
ORDER = ["veth0", "docker0", "eth0"]


def _out(t: float, sport: int = 5000, src: str = C, ip_id: int = 0, out_port: int | None = None):
    return [pkt("veth0", t, src, sport, S, 53, ip_id=ip_id),
            pkt("docker0", t + 1, src, sport, S, 53, ip_id=ip_id),
            pkt("eth0", t + 3, GW, out_port or sport, S, 53, ttl=63, ip_id=ip_id)]


def test_identical_retransmissions_with_ip_id_zero_stay_apart():
    """Unconnected UDP sends DF datagrams with IP ID 0: same key, told apart by order/time."""
    packets = _out(0) + _out(100) + _out(200)
    journeys = build_journeys(packets, tie_order=ORDER)
    assert len(journeys) == 3
    for j, t0 in zip(journeys, (0, 100, 200), strict=True):
        assert j.interfaces == ("veth0", "docker0", "eth0")
        assert [h.packet.ts_ns % 10**6 for h in j.hops] == [t0 * 1000, (t0 + 1) * 1000, (t0 + 3) * 1000]


def test_interleaved_identical_payloads_from_two_containers():
    """Same key from 172.17.0.2 and .3 at once: the unchanged tuple wins across the bridge."""
    a = _out(0, src="172.17.0.2")
    b = _out(0.5, src="172.17.0.3", out_port=6000)
    journeys = build_journeys(a + b, tie_order=ORDER)
    assert len(journeys) == 2
    by_src = {j.first.tuple.src: j for j in journeys}
    assert by_src["172.17.0.2"].hops[1].packet.tuple.src == "172.17.0.2"
    assert by_src["172.17.0.3"].hops[1].packet.tuple.src == "172.17.0.3"
    # the NIC hop is ambiguous by key; each journey still gets exactly one, in time order
    assert sorted(len(j.hops) for j in journeys) == [3, 3]


def test_window_separates_late_duplicate():
    packets = [pkt("veth0", 0, C, 1, S, 2), pkt("eth0", 2_000_000, GW, 1, S, 2, ttl=63)]
    assert len(build_journeys(packets, window_s=1.0, tie_order=ORDER)) == 2
    assert len(build_journeys(packets, window_s=3.0, tie_order=ORDER)) == 1


def test_rewrite_without_ttl_drop_is_not_the_same_packet():
    """NAT happens where a packet is routed: a changed tuple with the same TTL is another packet."""
    packets = [pkt("veth0", 0, C, 1, S, 2), pkt("docker0", 1, "172.17.0.9", 1, S, 2)]
    assert len(build_journeys(packets, tie_order=ORDER)) == 2


def test_ttl_may_not_rise():
    packets = [pkt("eth0", 0, GW, 1, S, 2, ttl=63), pkt("veth0", 1, GW, 1, S, 2, ttl=64)]
    assert len(build_journeys(packets, tie_order=ORDER)) == 2


def test_hairpin_revisits_interfaces():
    """c -> host:8080 leaves through docker0 again, DNATed and SNATed, with TTL - 1."""
    packets = [
        pkt("veth0", 0, C, 4000, GW, 8080, ip_id=9, proto="tcp"),
        pkt("docker0", 0, C, 4000, GW, 8080, ip_id=9, proto="tcp"),
        pkt("docker0", 5, "172.17.0.1", 4000, C, 80, ttl=63, ip_id=9, proto="tcp"),
        pkt("veth0", 6, "172.17.0.1", 4000, C, 80, ttl=63, ip_id=9, proto="tcp"),
    ]
    [j] = build_journeys(packets, tie_order=ORDER)
    assert j.interfaces == ("veth0", "docker0", "docker0", "veth0")
    assert j.hops[2].changed == {"src": (C, "172.17.0.1"), "dst": (GW, C), "dport": (8080, 80),
                                 "ttl": (64, 63)}


def test_icmp_errors_match_without_payload_hash():
    a = Packet(1.0, "eth0", 0, FiveTuple("icmp", S, 0, GW, 0), 5, 56, 63, icmp_type=3,
               payload_hash=111, ts_ns=1_000_000_000)
    b = Packet(1.0, "docker0", 0, FiveTuple("icmp", S, 0, C, 0), 5, 56, 62, icmp_type=3,
               payload_hash=222, ts_ns=1_000_001_000)
    assert match_key(a) == match_key(b)
    [j] = build_journeys([a, b])
    assert j.hops[1].changed["dst"] == (GW, C)


def test_large_identical_burst_is_linear():
    """100k-packet bursts of identical datagrams must not go quadratic."""
    packets = []
    for n in range(20_000):
        packets += [pkt("veth0", n, C, 1, S, 2, index=n), pkt("eth0", n + 0.5, GW, 1, S, 2, ttl=63, index=n)]
    journeys = build_journeys(packets, tie_order=ORDER)
    assert len(journeys) == 20_000 and all(len(j.hops) == 2 for j in journeys)
    assert all(j.hops[0].packet.index == j.hops[1].packet.index for j in journeys)


# ---- the key-by-key pass against the general loop ----------------------------------------

def _general(packets: list[Packet], window_s: float = 1.0,
             tie_order: list[str] | None = None) -> list[tuple[Packet, ...]]:
    """The journeys of the general loop alone (every appearance through the per-key queues)."""
    ranked = tie_order if tie_order is not None else default_tie_order({p.iface for p in packets})
    rank = {name: n for n, name in enumerate(ranked)}
    order, nss = journeys._ordered(list(packets), rank)
    return [tuple(ps) for ps in journeys._sequential(order, nss, int(window_s * 1e9),
                                                     sorted({p.iface for p in packets}))]


def _random_packets(rng: random.Random) -> list[Packet]:
    """Few keys, few interfaces, TTL and tuple changes, equal times, ICMP errors, repeats."""
    tuples = [FiveTuple("udp", C, 5000, S, 53), FiveTuple("udp", GW, 5000, S, 53),
              FiveTuple("tcp", C, 5000, S, 53), FiveTuple("icmp", S, 0, C, 0)]
    out = []
    for i in range(rng.randint(0, 40)):
        k = rng.randrange(6)
        ns = 1_800_000_000_000_000_000 + rng.choice([0, 1, 2, 1000, 2_000_000_000]) * rng.randint(0, 3)
        out.append(Packet(ns / 1e9, rng.choice(ORDER + ["x9"]), i, rng.choice(tuples), k % 3, 40 + k // 3,
                          rng.choice([64, 64, 63, 62, 58, 65]), rng.choice(["", "", "S"]), 0, 0,
                          rng.choice([-1, -1, 8, 3]), rng.choice([k, k, 0, -1]), "", "",
                          0 if rng.random() < 0.02 else ns))
    if out and rng.random() < 0.1:
        out.append(out[rng.randrange(len(out))])          # the same object twice
    if rng.random() < 0.7:
        out.sort(key=lambda p: p.ts_ns)
    return out


def _random_paths(rng: random.Random) -> list[Packet]:
    """Journeys along veth -> docker0 -> eth0 (SNAT), back (DNAT) and hairpin, some perturbed,
    payloads shared between packets with other IP IDs."""
    paths = [[("veth0", 64, 0), ("docker0", 64, 0), ("eth0", 63, 1)],
             [("eth0", 63, 1), ("docker0", 62, 0), ("veth0", 62, 0)],
             [("veth0", 64, 0), ("docker0", 64, 0), ("docker0", 63, 2), ("veth0", 63, 2)]]
    tuples = [FiveTuple("udp", C, 5000, S, 53), FiveTuple("udp", GW, 5000, S, 53),
              FiveTuple("udp", "172.17.0.1", 5000, C, 80)]
    out = []
    t = 1_800_000_000_000_000_000
    for _ in range(rng.randint(0, 25)):
        t += rng.choice([0, 1, 10, 1000, 400_000_000])
        key, ns = rng.randrange(6), t
        hops = rng.choice(paths)
        for iface, ttl, tix in hops[:rng.randint(1, len(hops))] if rng.random() < 0.1 else hops:
            ns += rng.choice([0, 0, 1, 5, 100])
            if rng.random() < 0.05:
                ttl += rng.choice([-5, 1, 0])
            tup = tuples[tix] if rng.random() < 0.95 else rng.choice(tuples)
            out.append(Packet(ns / 1e9, iface, len(out), tup, key, 40, ttl, "", 0, 0,
                              -1 if rng.random() < 0.9 else rng.choice([3, 8]), key % 4 * 7, "", "", ns))
    if rng.random() < 0.5:
        rng.shuffle(out)
    return out


@pytest.mark.parametrize("make", [_random_packets, _random_paths])
def test_key_by_key_matches_the_general_loop(make) -> None:
    """build_journeys (each key's appearances checked in one pass, the rest to the general
    loop) gives exactly the general loop's journeys, in the same order."""
    rng = random.Random(11)
    for _ in range(600):
        packets = make(rng)
        window = rng.choice([1.0, 0.000002, 3.0])
        tie = rng.choice([None, ORDER, ORDER[::-1] + ["x9"]])
        got = build_journeys(packets, window, tie)
        assert [j.packets for j in got] == _general(packets, window, tie)
        assert [j.id for j in got] == list(range(len(got)))


def test_fixture_journeys_are_checked_key_by_key(fixture_journeys) -> None:
    packets, found = fixture_journeys
    reader = TraceReader(FIXTURE)
    rank = {name: n for n, name in enumerate(reader.tie_order())}
    lists = journeys._by_key(packets, rank, 10**9)
    assert lists is not None and lists is not journeys._UNSORTED
    assert [tuple(ps) for ps in lists] == [j.packets for j in found] \
        == _general(packets, tie_order=reader.tie_order())


def test_the_same_payload_in_other_packets() -> None:
    """Retransmitted payloads (other IP ID) share the payload hash, not the journey."""
    packets = sorted((p for n in range(50) for p in _out(n * 0.3, ip_id=n % 7)), key=lambda p: p.ts_ns)
    got = build_journeys(packets, tie_order=ORDER)
    assert len(got) == 50 and all(j.interfaces == ("veth0", "docker0", "eth0") for j in got)
    assert [j.packets for j in got] == _general(packets, tie_order=ORDER)

"""Follow each IP packet across the interfaces it crossed: packets -> journeys.  Pure.

The same packet seen on the container's veth, on docker0 and on the host NIC becomes one
:class:`Journey` whose hops are in time order.  NAT rewrites addresses, ports and (for ICMP
echo) the identifier, and routing lowers the TTL, so appearances are matched on what neither
changes (the *match key*):

* every protocol: IP ID, IP total length, and the hash of the L4 payload;
* TCP also: sequence and acknowledgement numbers and the flags;
* ICMP also: the type (ICMP *errors* quote the offending header, which NAT rewrites, so for
  them the payload hash is left out).

Packets sharing a key are not always one packet: Linux sends IP ID 0 for every datagram of an
unconnected UDP socket with DF set (and for SYN-ACKs and RSTs), so retransmissions and
repeated identical payloads share keys.  Among appearances with the same key a packet joins
the earliest still-open journey that

* has not yet been seen on this interface (or has, but the packet came back routed: lower TTL
  than that earlier appearance — hairpin NAT goes out the interface it came in),
* was last seen at most ``window_s`` earlier,
* is *compatible*: TTL not higher than at the previous hop and at most ``MAX_TTL_DROP`` lower,
  and the 5-tuple is either unchanged, or changed across at least one router (TTL dropped) —
  NAT happens only where the packet is routed, never across a bridge.

Among compatible journeys an unchanged 5-tuple wins over a rewritten one, then the earliest.
Appearances are processed in the order (capture time, TTL descending, interface rank, input
order).  Equal timestamps are common: a frame received on a bridge port keeps the timestamp
of that reception when the bridge passes it up to its own device (measured: the container's
veth and docker0 show the very same nanosecond for outgoing UDP and ICMP).  Routing lowers the
TTL, which orders hops across a router; across a bridge only the interfaces' roles can, so
``tie_order`` lists interfaces in path order (container veths, then bridges, then NICs — see
:func:`default_tie_order`, which guesses from Docker's names when it is not given).

Each hop's ``changed`` maps the fields in :data:`CHANGE_FIELDS` that differ from the previous
hop to ``(before, after)``, e.g. ``{"src": ("172.17.0.2", "203.0.113.2")}``.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from netsim.trace._gc import gc_paused
from netsim.trace.records import Hop, Journey, Packet

__all__ = [
    "CHANGE_FIELDS",
    "ICMP_ERROR_TYPES",
    "MAX_TTL_DROP",
    "ROLE_RANK",
    "build_journeys",
    "default_tie_order",
    "match_key",
]

CHANGE_FIELDS = ("src", "sport", "dst", "dport", "ttl")
MAX_TTL_DROP = 4
ICMP_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})
ROLE_RANK = {"container-veth": 0, "veth": 0, "bridge": 1, "nic": 2, "upstream": 3, "external": 4}
_SCAN_LIMIT = 64          # candidates examined per appearance (bounds pathological inputs)


def match_key(p: Packet) -> tuple[object, ...]:
    """What NAT and routing leave unchanged about a packet (see module docstring)."""
    proto = p.tuple.proto
    if proto == "tcp":
        return ("tcp", p.ip_id, p.length, p.payload_hash, p.tcp_seq, p.tcp_ack, p.tcp_flags)
    if proto == "icmp":
        if p.icmp_type in ICMP_ERROR_TYPES:
            return ("icmp", p.ip_id, p.length, p.icmp_type)
        return ("icmp", p.ip_id, p.length, p.icmp_type, p.payload_hash)
    return (proto, p.ip_id, p.length, p.payload_hash)


class _Open:
    """A journey being built."""

    __slots__ = ("first_ns", "hops", "ifaces", "last", "last_ns")

    def __init__(self, p: Packet, ns: int) -> None:
        self.hops = [p]
        self.ifaces = {p.iface: p.ttl}   # iface -> lowest TTL seen there
        self.last = p
        self.last_ns = ns
        self.first_ns = ns

    def add(self, p: Packet, ns: int) -> None:
        self.hops.append(p)
        prev = self.ifaces.get(p.iface)
        self.ifaces[p.iface] = p.ttl if prev is None else min(prev, p.ttl)
        self.last = p
        self.last_ns = ns


class _Group:
    """Open journeys of one match key: per interface, those not yet seen there."""

    __slots__ = ("max_ttl", "seen_on", "waiting")

    def __init__(self) -> None:
        self.waiting: dict[str, deque[_Open]] = {}
        self.seen_on: dict[str, deque[_Open]] = {}
        self.max_ttl: dict[str, int] = {}     # highest TTL seen per interface (revisit filter)


def _score(j: _Open, p: Packet, ns: int, window_ns: int) -> int:
    """0 best … 1 rewritten across a router; -1 incompatible."""
    if ns - j.last_ns > window_ns:
        return -1
    last = j.last
    drop = last.ttl - p.ttl
    if drop < 0 or drop > MAX_TTL_DROP:
        return -1
    if p.tuple == last.tuple:
        return 0
    if p.tuple.proto != last.tuple.proto or drop == 0:
        return -1
    return 1


def default_tie_order(ifaces: Iterable[str]) -> list[str]:
    """Interfaces in likely path order from their names: veth*, then bridges, then the rest."""
    def rank(name: str) -> tuple[int, str]:
        if name.startswith("veth"):
            return (0, name)
        if name.startswith(("docker", "br-", "br")):
            return (1, name)
        return (2, name)
    return sorted(set(ifaces), key=rank)


def build_journeys(packets: Iterable[Packet], window_s: float = 1.0,
                   tie_order: Sequence[str] | None = None) -> list[Journey]:
    """Group appearances of the same packet on different interfaces into journeys."""
    with gc_paused():       # many small acyclic objects: see netsim.trace._gc
        return _build(list(packets), window_s, tie_order)


def _build(items: list[Packet], window_s: float,
           tie_order: Sequence[str] | None) -> list[Journey]:
    ifaces = sorted({p.iface for p in items})
    ranked = list(tie_order) if tie_order is not None else default_tie_order(ifaces)
    rank = {name: n for n, name in enumerate(ranked)}
    unknown = len(rank)
    ns_of = [p.ts_ns or round(p.ts * 1e9) for p in items]
    keys = [(ns_of[i], -p.ttl, rank.get(p.iface, unknown), i) for i, p in enumerate(items)]
    keys.sort()
    window_ns = int(window_s * 1e9)
    groups: dict[tuple[object, ...], _Group] = {}
    done: list[_Open] = []
    for ns, _negttl, _rank, i in keys:
        p = items[i]
        key = match_key(p)
        g = groups.get(key)
        if g is None:
            g = groups[key] = _Group()
        iface = p.iface
        chosen = None
        q = g.waiting.get(iface)
        if q:
            # fast path: the oldest journey waiting for this interface, with the same tuple
            j = q[0]
            if iface not in j.ifaces and ns - j.last_ns <= window_ns:
                last = j.last
                if 0 <= last.ttl - p.ttl <= MAX_TTL_DROP and (
                        last.tuple is p.tuple or last.tuple == p.tuple):
                    q.popleft()
                    chosen = j
            if chosen is None:
                chosen = _pick_waiting(g, p, ns, window_ns)
        if chosen is None and g.max_ttl.get(iface, -1) > p.ttl:
            chosen = _pick_revisit(g, p, ns, window_ns)
        if chosen is None:
            chosen = _Open(p, ns)
            done.append(chosen)
            waiting = g.waiting
            for other in ifaces:
                if other != iface:
                    q = waiting.get(other)
                    if q is None:
                        q = waiting[other] = deque()
                    q.append(chosen)
        else:
            chosen.add(p, ns)
        seen = g.seen_on.get(iface)
        if seen is None:
            seen = g.seen_on[iface] = deque()
        seen.append(chosen)
        if p.ttl > g.max_ttl.get(iface, -1):
            g.max_ttl[iface] = p.ttl
    done.sort(key=lambda j: j.first_ns)
    new_journey, new_hop = Journey.__new__, Hop.__new__
    out = []
    for n, j in enumerate(done):
        hops = []
        prev = None
        for cur in j.hops:
            hop = new_hop(Hop)      # frozen dataclass: fill __dict__ directly (fast)
            hop.__dict__.update(packet=cur, changed=_changes(prev, cur) if prev else {})
            hops.append(hop)
            prev = cur
        journey = new_journey(Journey)
        journey.__dict__.update(id=n, hops=tuple(hops))
        out.append(journey)
    return out


def _pick_waiting(g: _Group, p: Packet, ns: int, window_ns: int) -> _Open | None:
    iface = p.iface
    queue = g.waiting.get(iface)
    if not queue:
        return None
    while queue and (iface in queue[0].ifaces or ns - queue[0].last_ns > window_ns):
        queue.popleft()          # already seen here, or too old for anything later
    best: _Open | None = None
    best_pos, best_score, scanned = -1, 99, 0
    for pos, j in enumerate(queue):
        if scanned >= _SCAN_LIMIT:
            break
        if iface in j.ifaces:
            continue
        scanned += 1
        s = _score(j, p, ns, window_ns)
        if 0 <= s < best_score:
            best, best_pos, best_score = j, pos, s
            if s == 0:
                break
    if best is not None and best_pos == 0:
        queue.popleft()          # otherwise left in place: skipped once it has this iface
    return best


def _pick_revisit(g: _Group, p: Packet, ns: int, window_ns: int) -> _Open | None:
    """A journey already seen on this interface that the packet came back to, routed."""
    recent = g.seen_on.get(p.iface)
    if not recent:
        return None
    while recent and ns - recent[0].last_ns > window_ns:
        recent.popleft()
    for n, j in enumerate(reversed(recent)):
        if n >= _SCAN_LIMIT:
            break
        if p.ttl < j.ifaces.get(p.iface, -1) and _score(j, p, ns, window_ns) >= 0:
            return j
    return None


def _changes(a: Packet, b: Packet) -> dict[str, tuple[object, object]]:
    out: dict[str, tuple[object, object]] = {}
    ta, tb = a.tuple, b.tuple
    if ta is not tb and ta != tb:
        if ta.src != tb.src:
            out["src"] = (ta.src, tb.src)
        if ta.sport != tb.sport:
            out["sport"] = (ta.sport, tb.sport)
        if ta.dst != tb.dst:
            out["dst"] = (ta.dst, tb.dst)
        if ta.dport != tb.dport:
            out["dport"] = (ta.dport, tb.dport)
    if a.ttl != b.ttl:
        out["ttl"] = (a.ttl, b.ttl)
    return out

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
hop to ``(before, after)``, e.g. ``{"src": ("172.17.0.2", "203.0.113.2")}``; it is worked out
when first read (``Journey.hops`` itself is built on first access from ``Journey.packets``).

Speed (this is the hot loop of offline analysis): appearances are ordered by one C-level sort
on ``ts_ns`` and only runs of equal timestamps are re-sorted by (TTL, rank); each packet's key
is built from the tuple fields unpacked once; a key seen once (nearly every key) maps straight
to its one open journey, and only keys shared by several open journeys get the per-interface
queues below.  The internal key leaves out the protocol (``match_key`` keeps it): packets of
different protocols never join one journey anyway, because compatibility requires the same
protocol.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from itertools import compress, islice
from operator import attrgetter, eq

from netsim.trace._gc import gc_paused
from netsim.trace.records import CHANGE_FIELDS, Journey, Packet

__all__ = [
    "CHANGE_FIELDS",
    "ICMP_ERROR_TYPES",
    "MAX_TTL_DROP",
    "ROLE_RANK",
    "build_journeys",
    "default_tie_order",
    "match_key",
]

MAX_TTL_DROP = 4
ICMP_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})
ROLE_RANK = {"container-veth": 0, "veth": 0, "bridge": 1, "nic": 2, "upstream": 3, "external": 4}
_SCAN_LIMIT = 64          # candidates examined per appearance (bounds pathological inputs)
_TS_NS = attrgetter("ts_ns")


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

    __slots__ = ("first_ns", "ifaces", "last_ns", "last_ttl", "last_tuple", "packets")

    def __init__(self, p: Packet, ns: int) -> None:
        self.packets = [p]
        self.ifaces = {p.iface: p.ttl}   # iface -> lowest TTL seen there
        self.last_ttl = p.ttl
        self.last_tuple = p.tuple
        self.last_ns = ns
        self.first_ns = ns

    def add(self, p: Packet, ns: int) -> None:
        self.packets.append(p)
        prev = self.ifaces.get(p.iface)
        if prev is None or p.ttl < prev:
            self.ifaces[p.iface] = p.ttl
        self.last_ttl = p.ttl
        self.last_tuple = p.tuple
        self.last_ns = ns


class _Group:
    """Open journeys of one match key (when several): per interface, those not yet seen there."""

    __slots__ = ("max_ttl", "seen_on", "waiting")

    def __init__(self) -> None:
        self.waiting: dict[str, deque[_Open]] = {}
        self.seen_on: dict[str, deque[_Open]] = {}
        self.max_ttl: dict[str, int] = {}     # highest TTL seen per interface (revisit filter)

    @classmethod
    def of(cls, j: _Open, ifaces: Sequence[str]) -> _Group:
        """A group holding the one journey ``j`` so far (a key's second journey arrives)."""
        g = cls()
        for iface in ifaces:
            if iface in j.ifaces:
                g.seen_on[iface] = deque((j,))
                g.max_ttl[iface] = max(p.ttl for p in j.packets if p.iface == iface)
            else:
                g.waiting[iface] = deque((j,))
        return g

    def add_new(self, j: _Open, iface: str, ifaces: Sequence[str]) -> None:
        waiting = self.waiting
        for other in ifaces:
            if other != iface:
                q = waiting.get(other)
                if q is None:
                    q = waiting[other] = deque()
                q.append(j)

    def note_seen(self, j: _Open, iface: str, ttl: int) -> None:
        seen = self.seen_on.get(iface)
        if seen is None:
            seen = self.seen_on[iface] = deque()
        seen.append(j)
        if ttl > self.max_ttl.get(iface, -1):
            self.max_ttl[iface] = ttl


def _score(j: _Open, p: Packet, ns: int, window_ns: int) -> int:
    """0 best … 1 rewritten across a router; -1 incompatible."""
    if ns - j.last_ns > window_ns:
        return -1
    drop = j.last_ttl - p.ttl
    if drop < 0 or drop > MAX_TTL_DROP:
        return -1
    last = j.last_tuple
    if p.tuple is last or p.tuple == last:
        return 0
    if p.tuple.proto != last.proto or drop == 0:
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


def _ordered(items: list[Packet], rank: dict[str, int]) -> tuple[list[Packet], list[int]]:
    """Appearances in (time, TTL descending, interface rank, input order), with their times."""
    nss = list(map(_TS_NS, items))
    if all(nss):
        order = sorted(items, key=_TS_NS)
        nss = list(map(_TS_NS, order))
    else:                   # hand-made packets with only ``ts``
        nss = [ns or round(p.ts * 1e9) for p, ns in zip(items, nss, strict=True)]
        idx = sorted(range(len(items)), key=nss.__getitem__)
        order = [items[i] for i in idx]
        nss = [nss[i] for i in idx]
    # equal timestamps (a bridged frame keeps its port's receive time): re-sort each such run
    unknown = len(rank)

    def tie_key(p: Packet) -> tuple[int, int]:
        return (-p.ttl, rank.get(p.iface, unknown))
    n = len(nss)
    done_upto = -1
    for i in compress(range(n - 1), map(eq, nss, islice(nss, 1, None))):
        if i < done_upto:
            continue
        a, b = order[i], order[i + 1]
        if a.ttl > b.ttl or (a.ttl == b.ttl and
                             rank.get(a.iface, unknown) <= rank.get(b.iface, unknown)):
            continue                        # this pair is in order already (the usual case)
        ns = nss[i]
        start, end = i, i + 1
        while start > 0 and nss[start - 1] == ns:
            start -= 1
        while end + 1 < n and nss[end + 1] == ns:
            end += 1
        order[start:end + 1] = sorted(order[start:end + 1], key=tie_key)
        done_upto = end
    return order, nss


def _build(items: list[Packet], window_s: float,
           tie_order: Sequence[str] | None) -> list[Journey]:
    ifaces = sorted({p.iface for p in items})
    ranked = list(tie_order) if tie_order is not None else default_tie_order(ifaces)
    rank = {name: n for n, name in enumerate(ranked)}
    order, nss = _ordered(items, rank)
    window_ns = int(window_s * 1e9)
    max_drop = MAX_TTL_DROP
    icmp_errors = ICMP_ERROR_TYPES
    groups: dict[tuple[object, ...], _Open | _Group] = {}
    get = groups.get
    done: list[_Open] = []
    new_open = _Open
    for p, ns in zip(order, nss, strict=True):
        (_ts, iface, _index, tup, ip_id, length, ttl, flags, seq, ack, itype, phash,
         _smac, _dmac, _tsns) = p
        key = (ip_id, length, flags, seq, ack, itype,
               phash if itype not in icmp_errors else -1)
        g = get(key)
        if g is None:
            j = groups[key] = new_open(p, ns)
            done.append(j)
            continue
        if type(g) is _Open:
            j = g
            if ns - j.last_ns > window_ns:          # too old to take anything more: replace
                j = groups[key] = new_open(p, ns)
                done.append(j)
                continue
            drop = j.last_ttl - ttl
            if 0 <= drop <= max_drop:
                low = j.ifaces.get(iface)
                if low is None or ttl < low:        # new here, or came back routed
                    last = j.last_tuple
                    if last is tup or (drop and last.proto == tup.proto) or last == tup:
                        j.packets.append(p)         # j.add(p, ns), inlined
                        j.ifaces[iface] = ttl
                        j.last_ttl = ttl
                        j.last_tuple = tup
                        j.last_ns = ns
                        continue
            g = groups[key] = _Group.of(j, ifaces)
        assert isinstance(g, _Group)
        chosen = _pick(g, p, ns, window_ns)
        if chosen is None:
            chosen = new_open(p, ns)
            done.append(chosen)
            g.add_new(chosen, iface, ifaces)
        else:
            chosen.add(p, ns)
        g.note_seen(chosen, iface, ttl)
    new_journey = Journey.__new__
    out = []
    for n, j in enumerate(done):
        journey = new_journey(Journey)
        journey.id = n
        journey.packets = tuple(j.packets)
        journey._hops = None
        out.append(journey)
    return out


def _pick(g: _Group, p: Packet, ns: int, window_ns: int) -> _Open | None:
    """The journey of a shared key that ``p`` continues, if any."""
    iface = p.iface
    chosen = None
    q = g.waiting.get(iface)
    if q:
        # fast path: the oldest journey waiting for this interface, with the same tuple
        j = q[0]
        if iface not in j.ifaces and ns - j.last_ns <= window_ns:
            if 0 <= j.last_ttl - p.ttl <= MAX_TTL_DROP and (
                    j.last_tuple is p.tuple or j.last_tuple == p.tuple):
                q.popleft()
                chosen = j
        if chosen is None:
            chosen = _pick_waiting(g, p, ns, window_ns)
    if chosen is None and g.max_ttl.get(iface, -1) > p.ttl:
        chosen = _pick_revisit(g, p, ns, window_ns)
    return chosen


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

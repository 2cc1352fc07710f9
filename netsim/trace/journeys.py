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

Speed (this is the hot loop of offline analysis): the matcher never lets appearances of
different keys meet, so :func:`_by_key` works key by key.  One pass over the appearances in time
order (as ``TraceReader.packets`` gives them; others are sorted first) finds each key's state
in a dictionary keyed by the payload hash (an int, cheap to hash and compare; the rest of the
key is compared with the key's first appearance) and checks that each appearance simply
continues the previous one.  Nearly every key passes — one packet crossing the path — and
becomes one journey without any per-interface queue (a payload hash shared by other packets
is sorted out by a second such pass over its appearances, keyed by the whole match key); the
keys that do not (repeats, rewrites without a TTL drop, equal times out of path order, gaps
beyond the window) go through the general loop (:func:`_sequential`, with the per-interface
queues below) on their own appearances, and journeys are numbered by their first appearance
in the global order as that loop numbers them.  The internal key leaves out the protocol
(``match_key`` keeps it): packets of different protocols never join one journey anyway,
because compatibility requires the same protocol.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from itertools import compress, islice
from operator import attrgetter, eq, itemgetter, lt, sub
from typing import Any

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
_IFACE = attrgetter("iface")


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
        return _build(packets if type(packets) is list else list(packets), window_s, tie_order)


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
    if tie_order is not None:
        ranked = list(tie_order)
    else:
        ranked = default_tie_order(set(map(_IFACE, items)))
    rank = {name: n for n, name in enumerate(ranked)}
    window_ns = int(window_s * 1e9)
    lists = _by_key(items, rank, window_ns)
    if lists is _UNSORTED:
        lists = _by_key(sorted(items, key=_TS_NS), rank, window_ns)
    if lists is None or lists is _UNSORTED:     # the general order and loop
        order, nss = _ordered(items, rank)
        lists = _sequential(order, nss, window_ns, sorted(set(map(_IFACE, items))))
    new_journey = Journey.__new__
    out = []
    for n, packets in enumerate(map(tuple, lists)):
        journey = new_journey(Journey)
        journey.id = n
        journey.packets = packets
        journey._hops = None
        out.append(journey)
    return out


_UNSORTED: list[list[Packet]] = []      # _by_key's answer for appearances not in time order
# _by_key's state of one match key, a list: the last appearance's [0] TTL, [1] tuple, [2] time,
# [3] interface; [4] the first one's time; [5] the interfaces seen since the TTL last dropped;
# [6] the match key but for the payload hash; [7:] the appearances
_STATE_LAST_NS = itemgetter(2)
_STATE_FIRST_NS = itemgetter(4)
_STATE_PACKETS = itemgetter(slice(7, None))
_FIRST_PACKET = 7
_FIRST = itemgetter(0)


def _by_key(order: list[Packet], rank: dict[str, int], window_ns: int,
            by_payload: bool = True) -> list[list[Packet]] | None:
    """The journeys' packets, worked out key by key, for appearances in time order.

    Appearances of different match keys never meet in the matcher, so each key's
    appearances can be matched on their own, in the global order restricted to that key.
    Nearly always they are one packet crossing the path, and one pass over the appearances
    checks just that: each continues its key's previous appearance (TTL not rising, dropping
    by at most ``MAX_TTL_DROP``, the tuple unchanged or rewritten across a router, no
    interface twice without a TTL drop in between, equal times already in path order), and
    the key's appearances span at most the window.  Such a key is one journey; any other
    key's appearances go through :func:`_sequential`, the general loop.  Journeys are
    numbered by their first appearance in the global order, as the general loop numbers them.

    ``by_payload``: the dictionary is keyed by the payload hash alone when there is one (an
    int: cheap to hash and compare) and the rest of the match key is compared with the first
    appearance's; appearances that only share the payload hash (the same payload in other
    packets) are then told apart by a second pass over them keyed by the whole match key.

    :data:`_UNSORTED` when ``order`` is not in time order; None when some packet has no
    ``ts_ns`` or the same object is given twice (rare inputs, for the general loop).
    """
    groups: dict[object, list[Any]] = {}
    get = groups.get
    states: list[list[Any]] = []                # one per key, by first appearance
    add = states.append
    mixed: list[list[Any]] = []                 # keys that are not one simple journey
    shared: list[list[Any]] = []                # payload hashes of more than one match key
    unknown = len(rank)
    max_drop = MAX_TTL_DROP
    icmp_errors = ICMP_ERROR_TYPES
    prev_ns = 1                                 # (so a missing ts_ns, 0, stops the pass too)
    for p in order:
        tup, ip_id, length, ttl, flags, seq, ack, itype, phash, _smac, _dmac, ns = p[3:]
        if ns < prev_ns:
            return _UNSORTED if ns else None
        prev_ns = ns
        rest = (ip_id, length, flags, seq, ack, itype)
        if itype in icmp_errors:
            k: object = (rest, -1)              # ICMP errors: the payload hash left out
        elif not phash:
            k = rest                            # no payload (the key's other shapes differ)
        elif phash > 0 and by_payload:
            k = phash
        else:
            k = (rest, phash)
        st = get(k)
        iface = p[1]
        if st is None:
            groups[k] = st = [ttl, tup, ns, iface, ns, (iface,), rest, p]
            add(st)
            continue
        st.append(p)
        if rest != st[6]:
            shared.append(st)                   # another packet with the same payload
        last_ttl = st[0]
        last_tup = st[1]
        if ttl == last_ttl:
            segment = st[5]
            if tup is not last_tup and tup != last_tup:
                mixed.append(st)                # rewritten without being routed
            elif iface in segment:
                mixed.append(st)                # back on an interface without being routed
            elif ns == st[2] and rank.get(iface, unknown) < rank.get(st[3], unknown):
                mixed.append(st)                # equal times not in path order: sort first
            st[5] = segment + (iface,)
        else:
            if not 0 < last_ttl - ttl <= max_drop or (tup is not last_tup and
                                                      tup.proto != last_tup.proto):
                mixed.append(st)
            st[0] = ttl
            st[1] = tup
            st[5] = (iface,)
        st[2] = ns
        st[3] = iface
    if order and prev_ns - order[0].ts_ns > window_ns and \
            max(map(sub, map(_STATE_LAST_NS, states), map(_STATE_FIRST_NS, states))) > window_ns:
        mixed.extend(st for st in states if st[2] - st[4] > window_ns)
    if not mixed and not shared:
        starts = list(map(_STATE_FIRST_NS, states))
        if all(map(lt, starts, islice(starts, 1, None))):
            return list(map(_STATE_PACKETS, states))
        return _numbered(list(map(_STATE_PACKETS, states)), order, rank)
    redo = {id(st) for st in mixed}
    split = {id(st) for st in shared}
    out: list[list[Packet]] = []
    for st in states:
        g = st[_FIRST_PACKET:]
        if id(st) in split:                     # g is in time order: never _UNSORTED
            parts = _by_key(g, rank, window_ns, by_payload=False)
            if parts is not None and parts is not _UNSORTED:
                out.extend(parts)
                continue
        elif id(st) not in redo:
            out.append(g)
            continue
        g.sort(key=lambda p: (p.ts_ns, -p.ttl, rank.get(p.iface, unknown)))
        out.extend(_sequential(g, list(map(_TS_NS, g)), window_ns, sorted(set(map(_IFACE, g)))))
    return _numbered(out, order, rank)


def _numbered(lists: list[list[Packet]], order: list[Packet],
              rank: dict[str, int]) -> list[list[Packet]] | None:
    """``lists`` in the order of their first packets in the global order (see the module
    docstring); None when some packet object occurs twice in ``order``."""
    starts = list(map(_TS_NS, map(_FIRST, lists)))
    by_time = sorted(range(len(lists)), key=starts.__getitem__)     # stable
    lists = list(map(lists.__getitem__, by_time))
    starts = list(map(starts.__getitem__, by_time))
    ties = list(compress(range(len(starts) - 1), map(eq, starts, islice(starts, 1, None))))
    if not ties:
        return lists
    n = len(order)
    pos = dict(zip(map(id, order), range(n), strict=True))
    if len(pos) != n:
        return None
    unknown = len(rank)

    def first_key(ps: list[Packet]) -> tuple[int, int, int]:
        p = ps[0]
        return (-p.ttl, rank.get(p.iface, unknown), pos[id(p)])
    end = -1
    for i in ties:                          # each run of equal start times, sorted
        if i < end:
            continue
        end = i + 1
        while end < len(starts) and starts[end] == starts[i]:
            end += 1
        lists[i:end] = sorted(lists[i:end], key=first_key)
    return lists


def _sequential(order: list[Packet], nss: list[int], window_ns: int,
                ifaces: Sequence[str]) -> list[list[Packet]]:
    """The matcher over appearances in the global order (see the module docstring): the
    journeys' packets, in the order the journeys began."""
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
    return [j.packets for j in done]


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

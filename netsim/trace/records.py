"""Plain records the tracer produces and every later stage consumes (pure data, no I/O).

These are the contract between capture/decode (producers) and journeys, nat_table, verify,
analysis (consumers).  Addresses are dotted strings, ports ints (0 where the protocol has
none; for ICMP echo, ``sport`` = ``dport`` = the echo identifier), times float seconds since
the epoch (the same clock for packets and conntrack events).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "CHANGE_FIELDS",
    "CaptureStats",
    "ConntrackEvent",
    "FiveTuple",
    "Hop",
    "Journey",
    "NatBinding",
    "Packet",
    "changes",
]


@dataclass(frozen=True, order=True)
class FiveTuple:
    proto: str          # "tcp" | "udp" | "icmp" | other protocol name/number as text
    src: str
    sport: int
    dst: str
    dport: int

    def reversed(self) -> FiveTuple:
        return FiveTuple(self.proto, self.dst, self.dport, self.src, self.sport)

    def __str__(self) -> str:
        return f"{self.proto} {self.src}:{self.sport} -> {self.dst}:{self.dport}"


class Packet(NamedTuple):
    """One appearance of one IPv4 packet on one captured interface.

    A named tuple (immutable, compared and hashed by value): a trace holds hundreds of
    thousands of these, and a tuple is built several times faster and is half the size of a
    dataclass instance.  Use ``p._replace(iface=...)`` to derive a changed copy.
    """

    ts: float
    iface: str                  # interface name as captured (e.g. "vethb1c2d3e", "docker0", "eth0")
    index: int  # type: ignore[assignment]  # position in that interface's pcap (0-based)
    tuple: FiveTuple
    ip_id: int
    length: int                 # IP total length
    ttl: int
    tcp_flags: str = ""         # e.g. "S", "SA", "A", "PA", "FA", "R" ("" for non-TCP)
    tcp_seq: int = 0
    tcp_ack: int = 0
    icmp_type: int = -1
    payload_hash: int = 0       # hash of the L4 payload bytes (0 when empty)
    src_mac: str = ""
    dst_mac: str = ""
    ts_ns: int = 0              # exact capture time in ns since the epoch (ts is a float of it;
    #                             hops on one host often differ by < 1 us, so order by this)


def changes(a: Packet, b: Packet) -> dict[str, tuple[object, object]]:
    """The fields of :data:`CHANGE_FIELDS` that differ from ``a`` to ``b``: name -> (a's, b's)."""
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


CHANGE_FIELDS = ("src", "sport", "dst", "dport", "ttl")


class Hop:
    """A journey's appearance at one interface, with what changed since the previous hop.

    ``changed`` maps field -> (before, after) (see :data:`CHANGE_FIELDS`); it is worked out on
    first access from the previous hop's packet, or given explicitly.
    """

    __slots__ = ("_changed", "_prev", "packet")

    def __init__(self, packet: Packet, changed: dict[str, tuple[object, object]] | None = None,
                 prev: Packet | None = None) -> None:
        self.packet = packet
        self._prev = prev
        self._changed = changed

    @property
    def changed(self) -> dict[str, tuple[object, object]]:
        if self._changed is None:
            self._changed = changes(self._prev, self.packet) if self._prev is not None else {}
        return self._changed

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Hop):
            return NotImplemented
        return self.packet == other.packet and self.changed == other.changed

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Hop(packet={self.packet!r}, changed={self.changed!r})"


class Journey:
    """One packet followed across every interface it crossed, in time order.

    Built from its packets; the :class:`Hop` objects are made on first access of ``hops``.
    """

    __slots__ = ("_hops", "id", "packets")

    def __init__(self, id: int, hops: tuple[Hop, ...] | None = None,  # noqa: A002
                 packets: tuple[Packet, ...] | None = None) -> None:
        self.id = id
        if hops is not None:
            self._hops: tuple[Hop, ...] | None = tuple(hops)
            self.packets: tuple[Packet, ...] = tuple(h.packet for h in hops)
        else:
            self._hops = None
            self.packets = tuple(packets or ())

    @property
    def hops(self) -> tuple[Hop, ...]:
        if self._hops is None:
            prev: Packet | None = None
            hops = []
            for p in self.packets:
                hops.append(Hop(p, None if prev is not None else {}, prev))
                prev = p
            self._hops = tuple(hops)
        return self._hops

    @property
    def first(self) -> Packet:
        return self.packets[0]

    @property
    def last(self) -> Packet:
        return self.packets[-1]

    @property
    def interfaces(self) -> tuple[str, ...]:
        return tuple(p.iface for p in self.packets)

    def __len__(self) -> int:
        return len(self.packets)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Journey):
            return NotImplemented
        return self.id == other.id and self.hops == other.hops

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Journey(id={self.id}, hops={self.hops!r})"


@dataclass(frozen=True)
class ConntrackEvent:
    """One ctnetlink event (or one entry of the final table dump, kind "DUMP")."""

    ts: float
    kind: str                   # "NEW" | "UPDATE" | "DESTROY" | "DUMP"
    original: FiveTuple
    reply: FiveTuple
    state: str = ""             # TCP state (ESTABLISHED, ...) or "" for udp/icmp
    timeout: int | None = None
    status: tuple[str, ...] = ()   # flags as conntrack prints them: UNREPLIED, ASSURED, ...
    ct_id: int | None = None

    @property
    def snat(self) -> bool:
        """Source rewritten: the reply goes to another address/port than the original came from."""
        return (self.reply.dst, self.reply.dport) != (self.original.src, self.original.sport)

    @property
    def dnat(self) -> bool:
        """Destination rewritten: the reply comes from another address/port than was addressed."""
        return (self.reply.src, self.reply.sport) != (self.original.dst, self.original.dport)


@dataclass(frozen=True)
class NatBinding:
    """A row of the NAT table as the seed draws it: inside ip:port <-> outside ip:port for a remote."""

    proto: str
    inside: tuple[str, int]
    outside: tuple[str, int]
    remote: tuple[str, int]
    kind: str                   # "snat" | "dnat"
    first_seen: float
    last_seen: float
    state: str = ""
    source: str = "conntrack"   # "conntrack" | "packets"


@dataclass(frozen=True)
class CaptureStats:
    """What one capture point kept, and what the kernel says it dropped."""

    iface: str
    kept: int                   # packets written to the pcap
    received: int               # packets the filter saw (libpcap's ps_recv)
    kernel_drops: int           # libpcap's ps_drop (ring overflow)
    if_drops: int = 0           # libpcap's ps_ifdrop
    not_written: int = 0        # received - kept - kernel_drops: seen by the kernel but never
    #                             written (tcpdump stopped before its ring drained); 0 when complete

    @property
    def complete(self) -> bool:
        """Every packet the kernel handed to this capture point is in the pcap."""
        return self.kernel_drops == 0 and self.if_drops == 0 and self.not_written == 0

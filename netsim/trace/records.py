"""Plain records the tracer produces and every later stage consumes (pure data, no I/O).

These are the contract between capture/decode (producers) and journeys, nat_table, verify,
analysis (consumers).  Addresses are dotted strings, ports ints (0 where the protocol has
none; for ICMP echo, ``sport`` = ``dport`` = the echo identifier), times float seconds since
the epoch (the same clock for packets and conntrack events).
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "CaptureStats",
    "ConntrackEvent",
    "FiveTuple",
    "Hop",
    "Journey",
    "NatBinding",
    "Packet",
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


@dataclass(frozen=True)
class Packet:
    """One appearance of one IPv4 packet on one captured interface."""

    ts: float
    iface: str                  # interface name as captured (e.g. "vethb1c2d3e", "docker0", "eth0")
    index: int                  # position in that interface's pcap (0-based)
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


@dataclass(frozen=True)
class Hop:
    """A journey's appearance at one interface, with what changed since the previous hop."""

    packet: Packet
    changed: dict[str, tuple[object, object]] = field(default_factory=dict)  # field -> (before, after)


@dataclass(frozen=True)
class Journey:
    """One packet followed across every interface it crossed, in time order."""

    id: int
    hops: tuple[Hop, ...]

    @property
    def first(self) -> Packet:
        return self.hops[0].packet

    @property
    def last(self) -> Packet:
        return self.hops[-1].packet

    @property
    def interfaces(self) -> tuple[str, ...]:
        return tuple(h.packet.iface for h in self.hops)


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

"""Fast offline decoding of capture files into :class:`~netsim.trace.records.Packet` records.

Pure (no root, no network).  The hot fields are read straight from the raw bytes with
``struct``; scapy is only used by :func:`scapy_packets` / :func:`to_scapy` for people who want
full dissection in a notebook.

Supported containers: classic pcap (micro- and nanosecond magic, either byte order) and pcapng
(SHB/IDB/EPB/SPB/OPB; per-interface ``if_tsresol``).  Link types: Ethernet (1, with 802.1Q/ad
tags skipped), Linux cooked SLL (113) and SLL2 (276), raw IPv4 (101, 228).  Only IPv4 becomes a
:class:`Packet`; everything else (ARP, IPv6, truncated frames) is skipped and counted in
:class:`DecodeStats`.

Field conventions (see records.py): ``tcp_flags`` lists the set flags as letters in the fixed
order ``F S R P A U E C`` (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR), so SYN+ACK is ``"SA"``,
PSH+ACK ``"PA"``, FIN+ACK ``"FA"``.  ``payload_hash`` is ``zlib.crc32`` of the L4 payload bytes
that were captured (TCP after its data offset, UDP after 8 bytes, ICMP after its 8-byte header,
other protocols the whole IP payload; bounded by the IP total length so Ethernet padding is
ignored), 0 when empty.  ICMP echo request/reply (types 8/0, and 13/14, 15/16, 17/18) carry
the identifier in both ``sport`` and ``dport``; other ICMP types have ports 0.  Non-first IP
fragments have ports 0 and hash the fragment's payload.
"""
from __future__ import annotations

import socket
import struct
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from operator import itemgetter
from pathlib import Path
from typing import Any

from netsim.errors import TraceError
from netsim.trace._gc import gc_paused
from netsim.trace.records import FiveTuple, Packet

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "TCP_FLAG_ORDER",
    "DecodeStats",
    "decode_pcap",
    "read_pcap",
    "read_records",
    "scapy_packets",
    "to_scapy",
]

TCP_FLAG_ORDER = "FSRPAUEC"
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_IPV4 = 228
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276

# Immutable lookup tables (module-level constants, not state).
_FLAG_TEXT: tuple[str, ...] = tuple(
    "".join(TCP_FLAG_ORDER[i] for i in range(8) if b & (1 << i)) for b in range(256))
_PROTO_NAMES: dict[int, str] = {1: "icmp", 6: "tcp", 17: "udp"}
_ICMP_ECHO_TYPES = frozenset({0, 8, 13, 14, 15, 16, 17, 18})
_ETH_VLAN = frozenset({0x8100, 0x88A8, 0x9100})

_PCAP_MAGICS: dict[bytes, tuple[str, int]] = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),        # little endian, microseconds
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),           # little endian, nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_PCAPNG_BOM_LE = b"\x4d\x3c\x2b\x1a"               # 0x1A2B3C4D little endian
_INDEX = itemgetter(2)                     # Packet.index


@dataclass(frozen=True)
class DecodeStats:
    """What one capture file contained: records read, IPv4 packets decoded, the rest skipped."""

    path: str
    iface: str
    records: int
    decoded: int
    skipped_non_ipv4: int
    skipped_truncated: int
    link_types: tuple[int, ...]     # of the records read (an interface without packets: none)


def read_records(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """Yield ``(link_type, ts_ns, frame_bytes)`` for every record of a pcap or pcapng file."""
    data = _read_bytes(path)
    for linktype, ts_ns, off, caplen in _spans(path, data):
        yield linktype, ts_ns, data[off:off + caplen]


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read capture file: {exc.strerror or exc}") from exc


def _spans(path: Path, data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """``(link_type, ts_ns, offset, captured_length)`` of each record inside ``data``."""
    if len(data) < 4:
        if not data:
            return iter(())
        raise TraceError(f"{path}: too short to be a capture file ({len(data)} bytes)")
    head = data[:4]
    if head in _PCAP_MAGICS:
        return _pcap_spans(path, data)
    if head == _PCAPNG_SHB:
        return _pcapng_spans(data)
    raise TraceError(f"{path}: not a pcap/pcapng file (magic {head.hex()})")


def _pcap_spans(path: Path, data: bytes) -> Iterator[tuple[int, int, int, int]]:
    if len(data) < 24:
        raise TraceError(f"{path}: truncated pcap header")
    endian, mult = _PCAP_MAGICS[data[:4]]
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    unpack = struct.Struct(endian + "III").unpack_from
    off, end = 24, len(data)
    while off + 16 <= end:
        sec, frac, incl = unpack(data, off)
        off += 16
        if off + incl > end:        # a capture cut short (tcpdump killed): stop cleanly
            return
        yield linktype, sec * 1_000_000_000 + frac * mult, off, incl
        off += incl


def _pcapng_spans(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    off, end = 0, len(data)
    endian = "<"
    ifaces: list[tuple[int, int, int]] = []   # (linktype, units per second, offset_s)
    while off + 12 <= end:
        if data[off:off + 4] == _PCAPNG_SHB:
            bom = data[off + 8:off + 12]
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            ifaces = []
        btype, blen = struct.unpack_from(endian + "II", data, off)
        if blen < 12 or off + blen > end:
            return
        body = off + 8
        if btype == 1:                                    # Interface Description Block
            linktype = struct.unpack_from(endian + "H", data, body)[0]
            ifaces.append((linktype, *_idb_tsresol(data, body + 8, off + blen - 4, endian)))
        elif btype in (6, 3, 2):                          # EPB, SPB, obsolete PB
            if btype == 6:
                ifid, th, tl, cap = struct.unpack_from(endian + "IIII", data, body)
                pkt_off = body + 20
            elif btype == 2:
                ifid, _drops, th, tl, cap = struct.unpack_from(endian + "HHIII", data, body)
                pkt_off = body + 20
            else:
                ifid, th, tl = 0, 0, 0
                cap = min(struct.unpack_from(endian + "I", data, body)[0], blen - 16)
                pkt_off = body + 4
            if ifid < len(ifaces):
                linktype, units, offset_s = ifaces[ifid]
                ticks = (th << 32) | tl
                ts_ns = ticks * 1_000_000_000 // units + offset_s * 1_000_000_000
                yield linktype, ts_ns, pkt_off, min(cap, off + blen - 4 - pkt_off)
        off += blen


def _idb_tsresol(data: bytes, off: int, end: int, endian: str) -> tuple[int, int]:
    units, offset_s = 1_000_000, 0
    while off + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", data, off)
        if code == 0:
            break
        val = off + 4
        if code == 9 and length >= 1:                     # if_tsresol
            r = data[val]
            units = 2 ** (r & 0x7F) if r & 0x80 else 10 ** r
        elif code == 14 and length >= 8:                  # if_tsoffset
            offset_s = struct.unpack_from(endian + "q", data, val)[0]
        off = val + ((length + 3) & ~3)
    return units, offset_s


def decode_pcap(path: Path, iface: str,
                tuples: dict[object, FiveTuple] | None = None) -> tuple[list[Packet], DecodeStats]:
    """Decode every IPv4 packet of a capture file; also say what was skipped and why.

    The loop works on offsets into the file's bytes and caches the 5-tuple per raw
    address/port bytes and the MAC strings per raw header.  The cyclic garbage collector is
    paused meanwhile: the records hold no cycles, and its passes over hundreds of thousands of
    fresh objects otherwise cost as much as the decoding itself.

    ``tuples`` (optional, shared between the files of one trace) interns equal 5-tuples as one
    object, which makes comparing appearances on different interfaces cheaper later.
    """
    data = _read_bytes(path)
    with gc_paused():
        return _decode(path, data, iface, {} if tuples is None else tuples)


@cache
def _u16_values(swapped: bool) -> tuple[int, ...]:
    """Every 16-bit value, indexed by its bytes read in the other byte order (``swapped``) or
    in the same one: one tuple index turns a field read with the capture file's byte order
    into its network-order value, and equal values share one int object."""
    values = array("H", range(65536))
    if swapped:
        values.byteswap()
    return tuple(values)


def _fast_ethernet(data: bytes, iface: str, interned: dict[object, FiveTuple],
                   packets: list[Packet]
                   ) -> tuple[list[tuple[int, int, int, int, int]], int, set[int]] | None:
    """The common case, inlined: Ethernet frames carrying IPv4 TCP/UDP, in a classic pcap or
    in the Enhanced Packet Blocks of a little-endian pcapng (what netsim writes).

    Appends those packets to ``packets`` and returns every other packet record as a span
    ``(link_type, ts_ns, offset, caplen, index)`` for the general decoder, the record count and
    the link types met; None when the file is not of a shape this loop reads (then nothing was
    appended and the general decoder reads the whole file).

    One ``struct`` call per record reads its header (in the file's byte order) together with
    the Ethernet and IPv4 header fields; the 16-bit network-order fields among them go
    through :func:`_u16_values`.  The MAC pair, EtherType and IHL are looked up as one 15-byte
    key (a cache of the MAC strings that also says whether the frame is untagged IPv4
    without options), the 5-tuple by the raw address and port bytes.
    """
    head = data[:4]
    ng = head == _PCAPNG_SHB
    mult = 1
    if ng:
        if len(data) < 12 or data[8:12] != _PCAPNG_BOM_LE:
            return None
        off, endian = 0, "<"
    elif head in _PCAP_MAGICS and len(data) >= 24:
        endian, mult = _PCAP_MAGICS[head]
        if struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF != LINKTYPE_ETHERNET:
            return None
        off = 24
    else:
        return None
    # after the record header: MACs + EtherType + version/IHL (15s), TOS, total length, IP ID,
    # fragment field, TTL, protocol, checksum, addresses + ports (12s): 38 bytes of the frame
    net = "15sxHHHBB2x12s"
    if ng:       # type, length, interface, timestamp high/low, captured length; original length
        head_len, unpack = 28, struct.Struct("<IIIIII4x" + net).unpack_from
        unpack_head = struct.Struct("<IIIIII").unpack_from
    else:        # seconds, fraction, captured length; original length
        head_len, unpack = 16, struct.Struct(endian + "III4x" + net).unpack_from
        unpack_head = struct.Struct(endian + "III").unpack_from
    safe = len(data) - head_len - 38    # a record starting up to here has its 38 bytes in data
    u16 = _u16_values(endian == "<")
    frag_mask = 0xFF1F if endian == "<" else 0x1FFF     # the fragment offset, as read
    eth_ipv4 = b"\x08\x00\x45"      # EtherType IPv4, version 4 with a 20-byte header
    never = 1 << 62                 # a captured length no frame has
    unpack_ports = struct.Struct("!HH").unpack_from
    unpack_tcp = struct.Struct("!4xIIBB").unpack_from         # seq, ack, doff, flags
    append = packets.append
    new_packet = tuple.__new__
    packet_type = Packet
    ntoa = socket.inet_ntoa
    crc32 = zlib.crc32
    flag_text = _FLAG_TEXT
    # raw MACs + EtherType + version/IHL -> (src, dst) text, or () when not untagged IPv4/IHL 5;
    # the last key and 5-tuples are kept too, and compared before a dictionary is asked
    mac_cache: dict[bytes, tuple[str, ...]] = {}
    mac_get = mac_cache.get
    last_raw, src_mac, dst_mac = b"", "", ""
    macs: tuple[str, ...] | None = ()
    udp_cache: dict[bytes, FiveTuple] = {}
    tcp_cache: dict[bytes, FiveTuple] = {}
    udp_get, tcp_get = udp_cache.get, tcp_cache.get
    last_udp = last_tcp = b""
    udp_ft = tcp_ft = FiveTuple("", "", 0, "", 0)
    slow: list[tuple[int, int, int, int, int]] = []
    link_types: set[int] = set()        # of the records met (as the general decoder says)
    # pcapng interfaces: (link type, ns per tick or 0, ticks per second, offset in ns)
    ng_ifaces: list[tuple[int, int, int, int]] = []
    end_all, index, n0 = len(data), -1, len(packets)
    linktype = LINKTYPE_ETHERNET
    cur_if, ns_tick, units, offset_ns = -1, 1, 1_000_000_000, 0     # the last EPB's interface
    plain_ns = True                 # ns_tick 1 and no offset: the ticks are the nanoseconds
    min_fast = 38                   # captured bytes the inlined path needs (never: not Ethernet)
    while True:
        if ng:
            if off <= safe:
                btype, blen, ifid, th, tl, incl, raw, total_len, ip_id, frag, ttl, proto, addrs = \
                    unpack(data, off)
            elif off + 28 <= end_all:       # too short for the inlined path: header only
                btype, blen, ifid, th, tl, incl = unpack_head(data, off)
                raw = addrs = b""
                total_len = ip_id = frag = ttl = proto = 0
            elif off + 12 <= end_all:
                btype, blen = struct.unpack_from("<II", data, off)
                ifid = th = tl = incl = total_len = ip_id = frag = ttl = proto = 0
                raw = addrs = b""
            else:
                break
            nxt = off + blen
            if btype != 6 or ifid != cur_if or blen < 32 or nxt > end_all:
                if blen < 12 or nxt > end_all:
                    break
                if btype == 6 and blen >= 32 and ifid < len(ng_ifaces):
                    cur_if = ifid                     # an EPB of another interface
                    linktype, ns_tick, units, offset_ns = ng_ifaces[ifid]
                    plain_ns = ns_tick == 1 and not offset_ns
                    link_types.add(linktype)
                    min_fast = 38 if linktype == LINKTYPE_ETHERNET else never
                else:
                    if btype == 1:                                # Interface Description Block
                        lt = struct.unpack_from("<H", data, off + 8)[0]
                        # (not into units: that is the current interface's, maybe in use)
                        idb_units, offset_s = _idb_tsresol(data, off + 16, nxt - 4, "<")
                        ng_ifaces.append((lt, 1_000_000_000 // idb_units
                                          if 1_000_000_000 % idb_units == 0 else 0,
                                          idb_units, offset_s * 1_000_000_000))
                    elif btype in (0x0A0D0D0A, 2, 3, 6) and off:
                        # another section, a simple/obsolete packet block or a malformed
                        # EPB: rare shapes, left to the general decoder (for the whole file)
                        del packets[n0:]
                        return None
                    off = nxt
                    continue
            if plain_ns:
                ts_ns = th << 32 | tl
            else:
                ticks = th << 32 | tl
                ts_ns = (ticks * ns_tick if ns_tick else ticks * 1_000_000_000 // units) + offset_ns
            o = off + 28
            if incl > blen - 32:
                incl = blen - 32
            fend = o + incl
            off = nxt
        else:
            if off <= safe:
                sec, frac, incl, raw, total_len, ip_id, frag, ttl, proto, addrs = unpack(data, off)
            elif off + 16 <= end_all:
                sec, frac, incl = unpack_head(data, off)
                raw = addrs = b""
                total_len = ip_id = frag = ttl = proto = 0
            else:
                break
            o = off + 16
            off = fend = o + incl
            if fend > end_all:      # a capture cut short (tcpdump killed): stop cleanly
                break
            ts_ns = sec * 1_000_000_000 + frac * mult
        index += 1
        if incl >= min_fast and not frag & frag_mask:
            if raw != last_raw:
                last_raw = raw
                macs = mac_get(raw)
                if macs is None:
                    macs = mac_cache[raw] = (raw[6:12].hex(":"), raw[0:6].hex(":")) \
                        if raw[12:] == eth_ipv4 else ()
                if macs:
                    src_mac, dst_mac = macs
            if macs:
                total_len = u16[total_len]
                if proto == 17:
                    if addrs != last_udp:
                        last_udp = addrs
                        ft = udp_get(addrs)
                        if ft is None:
                            sport, dport = unpack_ports(addrs, 8)
                            ft = FiveTuple("udp", ntoa(addrs[0:4]), sport, ntoa(addrs[4:8]),
                                           dport)
                            ft = udp_cache[addrs] = interned.setdefault(ft, ft)
                        udp_ft = ft
                    end = o + 14 + total_len
                    if end > fend:
                        end = fend
                    append(new_packet(packet_type, (        # (an empty payload's crc32 is 0)
                        ts_ns / 1e9, iface, index, udp_ft, u16[ip_id], total_len, ttl, "", 0,
                        0, -1, crc32(data[o + 42:end]), src_mac, dst_mac, ts_ns)))
                    continue
                elif proto == 6 and total_len >= 34 and incl >= 48:     # the TCP header's
                    if addrs != last_tcp:                               # first 14 bytes too
                        last_tcp = addrs
                        ft = tcp_get(addrs)
                        if ft is None:
                            sport, dport = unpack_ports(addrs, 8)
                            ft = FiveTuple("tcp", ntoa(addrs[0:4]), sport, ntoa(addrs[4:8]), dport)
                            ft = tcp_cache[addrs] = interned.setdefault(ft, ft)
                        tcp_ft = ft
                    seq, ack, doff, fl = unpack_tcp(data, o + 34)
                    end = o + 14 + total_len
                    if end > fend:
                        end = fend
                    pay = o + 34 + (doff >> 4) * 4
                    append(new_packet(packet_type, (
                        ts_ns / 1e9, iface, index, tcp_ft, u16[ip_id], total_len, ttl,
                        flag_text[fl], seq, ack, -1, crc32(data[pay:end]) if pay < end else 0,
                        src_mac, dst_mac, ts_ns)))
                    continue
        slow.append((linktype, ts_ns, o, incl, index))
    if index >= 0 and not ng:
        link_types.add(LINKTYPE_ETHERNET)
    return slow, index + 1, link_types


def _decode(path: Path, data: bytes, iface: str,
            interned: dict[object, FiveTuple]) -> tuple[list[Packet], DecodeStats]:
    packets: list[Packet] = []
    append = packets.append
    spans: Iterable[tuple[int, int, int, int, int]]
    fast_records = 0
    link_types: set[int] = set()
    fast = _fast_ethernet(data, iface, interned, packets)
    if fast is not None:
        spans, fast_records, link_types = fast
        n_fast = len(packets)
    else:
        spans = ((lt, ts, o, cl, i) for i, (lt, ts, o, cl) in enumerate(_spans(path, data)))
        n_fast = 0
    ntoa = socket.inet_ntoa
    crc32 = zlib.crc32
    unpack_ip = struct.Struct("!2xHHHBB").unpack_from         # len, id, frag, ttl, proto
    unpack_ports = struct.Struct("!HH").unpack_from
    unpack_tcp = struct.Struct("!4xIIBB").unpack_from         # seq, ack, doff, flags
    mac_cache: dict[bytes, tuple[str, str]] = {}
    sll_cache: dict[bytes, str] = {}
    tuple_cache: dict[tuple[int, bytes], FiveTuple] = {}
    flag_text = _FLAG_TEXT
    proto_names = _PROTO_NAMES
    echo_types = _ICMP_ECHO_TYPES
    vlan_types = _ETH_VLAN
    new_packet = tuple.__new__
    non_ip = truncated = 0
    index = -1
    for linktype, ts_ns, o, caplen, index in spans:
        fend = o + caplen
        if linktype not in link_types:
            link_types.add(linktype)
        if linktype == LINKTYPE_ETHERNET:
            if caplen < 14:
                truncated += 1
                continue
            ethertype = data[o + 12] << 8 | data[o + 13]
            l3 = o + 14
            while ethertype in vlan_types and l3 + 4 <= fend:
                ethertype = data[l3 + 2] << 8 | data[l3 + 3]
                l3 += 4
            if ethertype != 0x0800:
                non_ip += 1
                continue
            raw = data[o:o + 12]
            macs = mac_cache.get(raw)
            if macs is None:
                macs = mac_cache[raw] = (raw[6:12].hex(":"), raw[0:6].hex(":"))
            src_mac, dst_mac = macs
        elif linktype == LINKTYPE_LINUX_SLL or linktype == LINKTYPE_LINUX_SLL2:
            if linktype == LINKTYPE_LINUX_SLL:
                hlen, ethertype, halen, a = 16, data[o + 14] << 8 | data[o + 15], data[o + 5], o + 6
            else:
                hlen, ethertype, halen, a = 20, data[o] << 8 | data[o + 1], data[o + 11], o + 12
            if caplen < hlen:
                truncated += 1
                continue
            if ethertype != 0x0800:
                non_ip += 1
                continue
            raw = data[a:a + min(halen, 8)]
            src_mac = sll_cache.get(raw) or sll_cache.setdefault(raw, raw.hex(":"))
            dst_mac = ""
            l3 = o + hlen
        elif linktype == LINKTYPE_RAW or linktype == LINKTYPE_IPV4:
            src_mac = dst_mac = ""
            l3 = o
        else:
            non_ip += 1
            continue
        if l3 + 20 > fend:
            truncated += 1
            continue
        vihl = data[l3]
        if vihl >> 4 != 4:
            non_ip += 1
            continue
        total_len, ip_id, frag, ttl, proto = unpack_ip(data, l3)
        l4 = l3 + (vihl & 0x0F) * 4
        end = l3 + total_len
        end = min(end, fend)
        flags = ""
        seq = ack = 0
        icmp_type = -1
        first_fragment = not frag & 0x1FFF
        if proto == 6 and first_fragment and end >= l4 + 14:
            key = (6, data[l3 + 12:l3 + 20] + data[l4:l4 + 4])
            seq, ack, doff, fl = unpack_tcp(data, l4)
            flags = flag_text[fl]
            pay = l4 + (doff >> 4) * 4
        elif proto == 17 and first_fragment and end >= l4 + 4:
            key = (17, data[l3 + 12:l3 + 20] + data[l4:l4 + 4])
            pay = l4 + 8
        elif proto == 1 and first_fragment and end >= l4 + 1:
            icmp_type = data[l4]
            if icmp_type in echo_types and end >= l4 + 6:
                key = (1, data[l3 + 12:l3 + 20] + data[l4 + 4:l4 + 6] * 2)
            else:
                key = (1, data[l3 + 12:l3 + 20] + bytes(4))
            pay = l4 + 8
        else:
            key = (proto, data[l3 + 12:l3 + 20] + bytes(4))
            pay = l4
        ft = tuple_cache.get(key)
        if ft is None:
            raw = key[1]
            sport, dport = unpack_ports(raw, 8)
            ft = FiveTuple(proto_names.get(proto) or str(proto), ntoa(raw[0:4]), sport,
                           ntoa(raw[4:8]), dport)
            ft = tuple_cache[key] = interned.setdefault(ft, ft)
        # Packet is a named tuple: tuple.__new__ with the fields in order skips its
        # Python-level __new__ (same object)
        append(new_packet(Packet, (
            ts_ns / 1e9, iface, index, ft, ip_id, total_len, ttl, flags, seq, ack, icmp_type,
            crc32(data[pay:end]) if pay < end else 0, src_mac, dst_mac, ts_ns)))
    records = max(index + 1, fast_records)
    if n_fast and len(packets) > n_fast:          # general-path records go back in file order
        packets.sort(key=_INDEX)
    stats = DecodeStats(str(path), iface, records, len(packets), non_ip, truncated,
                        tuple(sorted(link_types)))
    return packets, stats


def read_pcap(path: Path, iface: str) -> list[Packet]:
    """Every IPv4 packet of ``path`` as a :class:`Packet` seen on ``iface``, in file order."""
    return decode_pcap(path, iface)[0]


def to_scapy(frame: bytes, linktype: int = LINKTYPE_ETHERNET) -> Any:
    """Full scapy dissection of one frame (slow: for notebooks and debugging)."""
    from scapy.layers.inet import IP
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether

    if linktype == LINKTYPE_ETHERNET:
        return Ether(frame)
    if linktype == LINKTYPE_LINUX_SLL:
        return CookedLinux(frame)
    if linktype == LINKTYPE_LINUX_SLL2:
        return CookedLinuxV2(frame)
    return IP(frame)


def scapy_packets(path: Path, indices: set[int] | None = None) -> list[Any]:
    """scapy objects for the records of ``path`` (only those whose index is in ``indices``)."""
    out = []
    for i, (linktype, ts_ns, frame) in enumerate(read_records(path)):
        if indices is not None and i not in indices:
            continue
        pkt = to_scapy(frame, linktype)
        pkt.time = ts_ns / 1e9
        out.append(pkt)
    return out

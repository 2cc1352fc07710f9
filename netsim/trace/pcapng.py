"""Classic pcap -> pcapng: one file per captured interface, named and described in its IDB.

tcpdump writes classic pcap, whose header cannot say which interface a file holds.  After the
capture stops, each ``IFACE.pcap`` is rewritten as ``IFACE.pcapng``: a Section Header Block
(``shb_userappl`` netsim, ``shb_os`` the kernel), one Interface Description Block
(``if_name`` = the kernel's interface name, ``if_description`` = its role and namespace from the
trace's interface map, ``if_tsresol`` = 9 for tcpdump's nanosecond stamps or 6 for
microseconds, the pcap's snaplen and link type) and one Enhanced Packet Block per record, with
the pcap's captured and original lengths and exact timestamps.  Wireshark, tshark, capinfos
and scapy's ``PcapNgReader`` read it; ``mergecap`` merges the per-interface files into one.

The conversion is a single pass over the file's bytes (no dissection): the frame bytes are
copied as they are, only the 16-byte record header becomes a 28-byte EPB header plus padding
and the trailing length.  It writes a temporary file and renames it into place, so a crash
leaves either the pcap or the finished pcapng.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from netsim.errors import TraceError
from netsim.trace.records import CaptureStats

__all__ = [
    "PcapngInterface",
    "convert_pcaps",
    "describe_interface",
    "pcap_to_pcapng",
    "read_interfaces",
]

_PCAP_MAGICS: dict[bytes, tuple[str, int]] = {
    b"\xd4\xc3\xb2\xa1": ("<", 6),        # little endian, microseconds (if_tsresol 6)
    b"\xa1\xb2\xc3\xd4": (">", 6),
    b"\x4d\x3c\xb2\xa1": ("<", 9),        # little endian, nanoseconds (if_tsresol 9)
    b"\xa1\xb2\x3c\x4d": (">", 9),
}
_SHB_TYPE, _IDB_TYPE, _ISB_TYPE, _EPB_TYPE = 0x0A0D0D0A, 1, 5, 6
_OPT_END = 0
_SHB_OS, _SHB_USERAPPL = 3, 4
_IF_NAME, _IF_DESCRIPTION, _IF_TSRESOL = 2, 3, 9
_ISB_IFRECV, _ISB_IFDROP, _ISB_OSDROP = 4, 5, 7
_PADS = (b"", b"\0\0\0", b"\0\0", b"\0")            # indexed by length % 4


@dataclass(frozen=True)
class PcapngInterface:
    """What an Interface Description Block says (the options netsim writes and reads)."""

    link_type: int
    snaplen: int
    name: str = ""
    description: str = ""
    tsresol: int = 6            # as the option encodes it: 10**-tsresol s (2**-n if bit 7 set)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + _PADS[len(value) % 4]


def _block(btype: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


def _options(opts: list[tuple[int, bytes]]) -> bytes:
    if not opts:
        return b""
    return b"".join(_option(c, v) for c, v in opts) + struct.pack("<HH", _OPT_END, 0)


def describe_interface(info: Mapping[str, object]) -> str:
    """The ``if_description`` of a trace interface: its role, namespace and model name
    (``veth of container web; netns /run/netns/x-host; model veth0``)."""
    role = str(info.get("role") or "interface")
    parts = [f"{role} of container {info['container']}" if info.get("container") else role]
    if info.get("netns"):
        parts.append(f"netns {info['netns']}")
    if info.get("model_name"):
        parts.append(f"model {info['model_name']}")
    addrs = list(info.get("addresses") or [])            # type: ignore[call-overload]
    if addrs:
        parts.append("addresses " + " ".join(str(a) for a in addrs))
    if info.get("peer_address"):
        parts.append(f"peer {info['peer_address']}")
    return "; ".join(parts)


def pcap_to_pcapng(src: Path, dst: Path, if_name: str, if_description: str = "", *,
                   os_name: str = "", application: str = "netsim",
                   stats: CaptureStats | None = None, remove_src: bool = False) -> int:
    """Rewrite the classic pcap ``src`` as a one-interface pcapng ``dst``; return its records.

    A record cut short at the end of ``src`` (tcpdump killed mid-write) is left out, as every
    reader does.  ``stats`` (the capture's counters) become an Interface Statistics Block at
    the end: ``isb_ifrecv`` = received, ``isb_osdrop`` = kernel drops, ``isb_ifdrop`` =
    interface drops.  ``remove_src`` deletes ``src`` once ``dst`` is in place.
    """
    src, dst = Path(src), Path(dst)
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise TraceError(f"{src}: cannot read capture file: {exc.strerror or exc}") from exc
    magic = data[:4]
    if magic not in _PCAP_MAGICS or len(data) < 24:
        raise TraceError(f"{src}: not a classic pcap file (magic {magic.hex() or 'none'})")
    endian, tsresol = _PCAP_MAGICS[magic]
    snaplen, linktype = struct.unpack_from(endian + "II", data, 16)
    shb_opts = [(_SHB_USERAPPL, application.encode())]
    if os_name:
        shb_opts.append((_SHB_OS, os_name.encode()))
    head = [
        _block(_SHB_TYPE, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _options(shb_opts)),
        _block(_IDB_TYPE, struct.pack("<HHI", linktype & 0xFFFF, 0, snaplen) + _options(
            [(_IF_NAME, if_name.encode()),
             *([(_IF_DESCRIPTION, if_description.encode())] if if_description else []),
             (_IF_TSRESOL, bytes([tsresol]))])),
    ]
    body, records, last_ts = _epbs(data, endian, 10 ** tsresol)
    tail = b""
    if stats is not None:
        tail = _block(_ISB_TYPE, struct.pack("<III", 0, last_ts >> 32, last_ts & 0xFFFFFFFF)
                      + _options([(_ISB_IFRECV, struct.pack("<Q", stats.received)),
                                  (_ISB_IFDROP, struct.pack("<Q", stats.if_drops)),
                                  (_ISB_OSDROP, struct.pack("<Q", stats.kernel_drops))]))
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.writelines(head)
            fh.write(body)
            fh.write(tail)
        os.replace(tmp, dst)
        if remove_src and src != dst:
            src.unlink()
    except OSError as exc:
        raise TraceError(f"{dst}: cannot write pcapng: {exc.strerror or exc}") from exc
    return records


def _epbs(data: bytes, endian: str, scale: int) -> tuple[memoryview, int, int]:
    """The Enhanced Packet Blocks for every complete record of the pcap ``data``, their count
    and the last one's timestamp (in ``1/scale`` s).

    Three passes, each as cheap as it can be in Python: one loop finds where the records start
    (the only sequential part: each start follows from the previous length), numpy builds every
    EPB header and trailing length at once, and one loop copies the frames by slice assignment
    (one memmove per record, whatever the frame's size).  About 3x faster than packing and
    joining block by block.
    """
    import numpy as np

    unpack_len = struct.Struct(endian + "8xI").unpack_from
    starts: list[int] = []
    add = starts.append
    off, end = 24, len(data)
    while off + 16 <= end:
        nxt = off + 16 + unpack_len(data, off)[0]
        if nxt > end:               # a record cut short (tcpdump killed): left out
            break
        add(off)
        off = nxt
    n = len(starts)
    if not n:
        return memoryview(b""), 0, 0
    u32 = np.dtype(endian + "u4")
    src = np.frombuffer(data, np.uint8)
    rec = np.asarray(starts, np.int64)
    hdr = src[rec[:, None] + np.arange(16)].view(u32).reshape(n, 4)
    ts = hdr[:, 0].astype(np.uint64) * np.uint64(scale) + hdr[:, 1].astype(np.uint64)
    caplen = hdr[:, 2].astype(np.int64)
    blen = 32 + caplen + (-caplen & 3)
    at = np.zeros(n, np.int64)                       # where each EPB starts in the output
    np.cumsum(blen[:-1], out=at[1:])
    out = np.zeros(int(at[-1] + blen[-1]), np.uint8)
    epb = np.empty((n, 7), "<u4")                    # type, length, ifid, ts hi, ts lo, cap, orig
    epb[:, 0] = _EPB_TYPE
    epb[:, 1] = blen
    epb[:, 2] = 0
    epb[:, 3] = ts >> np.uint64(32)
    epb[:, 4] = ts & np.uint64(0xFFFFFFFF)
    epb[:, 5] = caplen
    epb[:, 6] = hdr[:, 3]
    out[at[:, None] + np.arange(28)] = epb.view(np.uint8).reshape(n, 28)
    out[(at + blen - 4)[:, None] + np.arange(4)] = \
        blen.astype("<u4").view(np.uint8).reshape(n, 4)
    dst, view = out.data, memoryview(data)
    for s, d, length in zip((rec + 16).tolist(), (at + 28).tolist(), caplen.tolist(),
                            strict=True):
        dst[d:d + length] = view[s:s + length]
    return dst, n, int(ts[-1])


def convert_pcaps(pcap_dir: Path, interfaces: Mapping[str, Mapping[str, object]],
                  stats: Iterable[CaptureStats] = (), os_name: str = "") -> dict[str, int]:
    """Turn every ``pcap_dir/IFACE.pcap`` into ``IFACE.pcapng`` (the pcap is removed).

    ``interfaces`` is the trace's interface map (name -> role, netns, ...): each file's IDB
    gets the name and :func:`describe_interface` of its entry.  Returns name -> records.
    """
    by_iface = {s.iface: s for s in stats}
    out: dict[str, int] = {}
    for src in sorted(Path(pcap_dir).glob("*.pcap")):
        name = src.stem
        out[name] = pcap_to_pcapng(src, src.with_suffix(".pcapng"), name,
                                   describe_interface(interfaces.get(name) or {}),
                                   os_name=os_name, stats=by_iface.get(name), remove_src=True)
    return out


def read_interfaces(path: Path) -> list[PcapngInterface]:
    """The Interface Description Blocks of a pcapng file (all sections, in file order)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read capture file: {exc.strerror or exc}") from exc
    if data[:4] != b"\x0a\x0d\x0d\x0a":
        raise TraceError(f"{path}: not a pcapng file (magic {data[:4].hex() or 'none'})")
    out: list[PcapngInterface] = []
    off, endian = 0, "<"
    while off + 12 <= len(data):
        if data[off:off + 4] == b"\x0a\x0d\x0d\x0a":
            endian = "<" if data[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        btype, blen = struct.unpack_from(endian + "II", data, off)
        if blen < 12 or off + blen > len(data):
            raise TraceError(f"{path}: block at offset {off} runs past the end of the file")
        if btype == _IDB_TYPE:
            linktype, _, snaplen = struct.unpack_from(endian + "HHI", data, off + 8)
            opts: dict[int, bytes] = {}
            o, stop = off + 16, off + blen - 4
            while o + 4 <= stop:
                code, length = struct.unpack_from(endian + "HH", data, o)
                if code == _OPT_END:
                    break
                opts.setdefault(code, data[o + 4:o + 4 + length])
                o += 4 + ((length + 3) & ~3)
            out.append(PcapngInterface(
                linktype, snaplen, opts.get(_IF_NAME, b"").decode("utf-8", "replace"),
                opts.get(_IF_DESCRIPTION, b"").decode("utf-8", "replace"),
                opts[_IF_TSRESOL][0] if opts.get(_IF_TSRESOL) else 6))
        off += blen
    return out

"""pcapng.py: classic pcap -> one-interface pcapng, checked with scapy's pcapng reader (an
independent implementation of the format) and with netsim's decoder; a version-2 trace reads
exactly like the version-1 trace it was converted from."""
from __future__ import annotations

import json
import shutil
import struct
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgReader, PcapReader, PcapWriter, RawPcapNgReader

from netsim.errors import TraceError
from netsim.trace import decode as decode_module
from netsim.trace.decode import _fast_ethernet, decode_pcap, read_records
from netsim.trace.pcapng import describe_interface, pcap_to_pcapng, read_interfaces
from netsim.trace.records import CaptureStats
from netsim.trace.store import FORMAT_VERSION, TraceReader, TraceWriter

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NAPT = FIXTURES / "trace_napt"
NAPT_BASIC = FIXTURES / "trace_napt_basic"


def _converted(tmp_path: Path, src: Path = NAPT_BASIC) -> Path:
    """A copy of a version-1 trace whose captures were converted as `netsim run` does."""
    d = tmp_path / src.name
    shutil.copytree(src, d)
    m = json.loads((d / "manifest.json").read_text())
    stats = [CaptureStats(**c) for c in m.get("capture", [])]
    counts = TraceWriter(d).convert_pcaps(m.get("interfaces") or {}, stats, "Linux test")
    assert counts and all(n > 0 for n in counts.values())
    assert not list((d / "pcap").glob("*.pcap")) and not list((d / "pcap").glob("*.tmp"))
    m["format_version"] = FORMAT_VERSION
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def test_scapy_reads_what_we_write(tmp_path: Path) -> None:
    d = _converted(tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    for iface, info in m["interfaces"].items():
        ng, classic = d / "pcap" / f"{iface}.pcapng", NAPT_BASIC / "pcap" / f"{iface}.pcap"
        # the IDB, as scapy reads it: name and nanosecond resolution
        with RawPcapNgReader(str(ng)) as raw:
            frames = list(raw)
            [(linktype, snaplen, options)] = raw.interfaces
        assert (linktype, options["name"], options["tsresol"]) == (1, iface.encode(), 10 ** 9)
        assert snaplen == 262144
        # the same frames, lengths and exact timestamps as the pcap tcpdump wrote
        with PcapReader(str(classic)) as pr:
            want = [(bytes(p), p.time, p.wirelen) for p in pr]
        with PcapNgReader(str(ng)) as nr:
            got = [(bytes(p), p.time, p.wirelen) for p in nr]
        assert got == want and len(frames) == len(want) > 0
        # the description says the role and the namespace
        [idb] = read_interfaces(ng)
        assert idb.name == iface and idb.tsresol == 9
        assert idb.description == describe_interface(info)
        assert idb.description.startswith(str(info["role"]))
        assert f"netns {info['netns']}" in idb.description
        if info["role"] == "veth":
            assert f"of container {info['container']}" in idb.description


def test_decoder_gives_the_same_packets_on_the_fast_path(tmp_path: Path) -> None:
    d = _converted(tmp_path, NAPT)
    for iface in ("vethc2", "docker0", "eth0"):
        ng, classic = d / "pcap" / f"{iface}.pcapng", NAPT / "pcap" / f"{iface}.pcap"
        a, sa = decode_pcap(classic, iface)
        b, sb = decode_pcap(ng, iface)
        assert a == b
        assert (sa.records, sa.decoded, sa.skipped_non_ipv4, sa.link_types) == \
               (sb.records, sb.decoded, sb.skipped_non_ipv4, sb.link_types)
        assert [r[1:] for r in read_records(ng)] == [r[1:] for r in read_records(classic)]
        # the EPBs go through the inlined Ethernet loop, not the general one
        packets: list = []
        fast = _fast_ethernet(ng.read_bytes(), iface, {}, packets)
        assert fast is not None and len(packets) == sum(
            1 for p in a if p.tuple.proto in ("tcp", "udp"))


def test_version_2_trace_analyses_like_version_1(tmp_path: Path) -> None:
    d = _converted(tmp_path)
    old, new = TraceReader(NAPT_BASIC), TraceReader(d)
    assert new.format_version == 2 and new.pcap_path("eth0").suffix == ".pcapng"
    assert sorted(new.interfaces) == sorted(old.interfaces)
    p1, j1 = old.analyse()
    p2, j2 = new.analyse()
    assert p1 == p2 and j1 == j2
    from netsim.experiment import load_observation, verify_trace
    assert load_observation(d).complete
    assert verify_trace(d)[0].ok


def test_microseconds_big_endian_truncated_and_statistics(tmp_path: Path) -> None:
    frames = [Ether() / IP(src="10.0.0.1", dst="10.0.0.2", id=i) / UDP(sport=1000 + i, dport=53)
              / (b"x" * i) for i in range(7)]
    for i, f in enumerate(frames):
        f.time = 1_800_000_000 + i / 1000
    src = tmp_path / "us.pcap"
    w = PcapWriter(str(src), endianness=">", sync=True)     # microseconds, big endian
    for f in frames:
        w.write(f)
    w.close()
    src.write_bytes(src.read_bytes()[:-3])              # the last record cut short
    dst = tmp_path / "us.pcapng"
    n = pcap_to_pcapng(src, dst, "lan0", "upstream", stats=CaptureStats("lan0", 7, 9, 2, 1))
    assert n == 6 and src.exists()
    [idb] = read_interfaces(dst)
    assert (idb.name, idb.description, idb.tsresol) == ("lan0", "upstream", 6)
    with PcapNgReader(str(dst)) as nr:
        got = list(nr)
    assert [bytes(p) for p in got] == [bytes(f) for f in frames[:6]]
    assert abs(float(got[5].time) - 1_800_000_000.005) < 1e-6
    packets = decode_pcap(dst, "lan0")[0]
    assert [p.ip_id for p in packets] == list(range(6))
    assert packets[5].ts_ns == 1_800_000_000_005_000_000
    # the Interface Statistics Block after the packets carries the capture's counters
    data = dst.read_bytes()
    off, blocks = 0, []
    while off < len(data):
        btype, blen = struct.unpack_from("<II", data, off)
        blocks.append((btype, off, blen))
        off += blen
    assert [b[0] for b in blocks] == [0x0A0D0D0A, 1, *[6] * 6, 5]
    _, isb, blen = blocks[-1]
    opts = data[isb + 20:isb + blen - 4]
    found = {}
    while opts[:2] != b"\0\0":
        code, length = struct.unpack_from("<HH", opts)
        found[code] = struct.unpack_from("<Q", opts, 4)[0]
        opts = opts[4 + length:]
    assert found == {4: 9, 5: 1, 7: 2}              # isb_ifrecv, isb_ifdrop, isb_osdrop


def test_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(30))
    with pytest.raises(TraceError, match="bad.pcap: not a classic pcap"):
        pcap_to_pcapng(bad, tmp_path / "bad.pcapng", "x")
    with pytest.raises(TraceError, match="missing.pcap"):
        pcap_to_pcapng(tmp_path / "missing.pcap", tmp_path / "m.pcapng", "x")
    with pytest.raises(TraceError, match="not a pcapng"):
        read_interfaces(NAPT / "pcap" / "eth0.pcap")


def test_empty_capture_converts(tmp_path: Path) -> None:
    src = tmp_path / "e.pcap"
    src.write_bytes(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
    assert pcap_to_pcapng(src, tmp_path / "e.pcapng", "e", remove_src=True) == 0
    assert not src.exists() and decode_pcap(tmp_path / "e.pcapng", "e")[0] == []
    assert read_interfaces(tmp_path / "e.pcapng")[0].tsresol == 9


def test_conversion_and_pcapng_decode_rates(tmp_path: Path) -> None:
    """Conversion and pcapng decoding well above 100k records/s (CI bound; see README)."""
    records = [frame for _lt, _ts, frame in read_records(NAPT / "pcap" / "docker0.pcap")]
    big = tmp_path / "big.pcap"
    n = 0
    with open(big, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
        while n < 60_000:
            for frame in records:
                fh.write(struct.pack("<IIII", 1_800_000_000 + n // 1000, n, len(frame), len(frame)))
                fh.write(frame)
                n += 1
    t0 = time.perf_counter()
    assert pcap_to_pcapng(big, tmp_path / "big.pcapng", "docker0", "bridge") == n
    convert = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    packets = decode_pcap(tmp_path / "big.pcapng", "docker0")[0]
    decode = len(packets) / (time.perf_counter() - t0)
    print(f"pcap -> pcapng {convert:,.0f} records/s; pcapng decode {decode:,.0f} packets/s")
    assert packets == decode_pcap(big, "docker0")[0]
    assert convert > 100_000 and decode > 100_000


# ---- the inlined pcapng loop against the general decoder ---------------------------------

def _general(path: Path, iface: str, monkeypatch: pytest.MonkeyPatch):
    """What the general decoder alone makes of a file (the inlined loop switched off)."""
    with monkeypatch.context() as m:
        m.setattr(decode_module, "_fast_ethernet", lambda *args: None)
        return decode_module._decode(path, path.read_bytes(), iface, {})


def _same(path: Path, iface: str, monkeypatch: pytest.MonkeyPatch) -> list:
    """decode_pcap (inlined loop first) and the general decoder agree on ``path``, exactly."""
    got, st = decode_pcap(path, iface)
    want, sw = _general(path, iface, monkeypatch)
    assert got == want
    assert [(p.ts, p.ts_ns, p.index) for p in got] == [(p.ts, p.ts_ns, p.index) for p in want]
    assert (st.records, st.decoded, st.skipped_non_ipv4, st.skipped_truncated, st.link_types) \
        == (sw.records, sw.decoded, sw.skipped_non_ipv4, sw.skipped_truncated, sw.link_types)
    return got


def _block(btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + bytes(-len(value) % 4)


def _idb(linktype: int, *opts: bytes) -> bytes:
    return _block(1, struct.pack("<HHI", linktype, 0, 262144)
                  + (b"".join(opts) + struct.pack("<HH", 0, 0) if opts else b""))


def _epb(ifid: int, ticks: int, frame: bytes, options: bytes = b"", caplen: int | None = None,
         ) -> bytes:
    return _block(6, struct.pack("<IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF,
                                 len(frame) if caplen is None else caplen, len(frame))
                  + frame + bytes(-len(frame) % 4) + options)


def _sll(frame: bytes) -> bytes:
    """An Ethernet frame as Linux cooked capture (SLL) would show it."""
    return struct.pack("!HHH8sH", 0, 1, 6, frame[6:12] + b"\0\0", 0x0800) + frame[14:]


def _shb() -> bytes:
    return _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))


def test_converted_fixtures_decode_like_the_general_decoder(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for src in (NAPT, NAPT_BASIC):
        d = _converted(tmp_path / src.name, src)
        for ng in sorted((d / "pcap").glob("*.pcapng")):
            got = _same(ng, ng.stem, monkeypatch)
            assert got and got == decode_pcap(src / "pcap" / f"{ng.stem}.pcap", ng.stem)[0]


def test_several_interfaces_options_and_a_cut_last_block(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """One section, four interfaces (nanoseconds, microseconds, binary 2^-20 s with an offset,
    cooked capture), EPBs interleaved between them, with options and with a captured length
    larger than the block holds, an IDB and an ISB between packets, the last block cut short:
    the inlined loop reads it exactly like the general decoder (same packets, times, indices,
    counts) and is not bypassed."""
    frames = {i: [(ts, f) for _lt, ts, f in read_records(NAPT / "pcap" / f"{i}.pcap")]
              for i in ("vethc2", "docker0", "eth0")}
    blocks = [_shb(), _idb(1, _opt(2, b"vethc2"), _opt(9, bytes([9]))),
              _idb(1, _opt(9, bytes([6])))]
    for n, (ts, f) in enumerate(frames["vethc2"][:8]):
        blocks.append(_epb(0, ts, f, _opt(2, struct.pack("<I", 1)) + _opt(0, b"") if n % 3 else b""))
    blocks.append(_idb(1, _opt(9, bytes([0x80 | 20])), _opt(14, struct.pack("<q", 7))))
    for n, ((t1, f1), (t2, f2)) in enumerate(zip(frames["docker0"], frames["eth0"], strict=False)):
        blocks.append(_epb(1, t1 // 1000, f1))
        blocks.append(_epb(2, t2 * 2**20 // 10**9, f2))
        if n == 5:
            blocks.append(_idb(113, _opt(9, bytes([3]))))    # between packets of interface 2
            blocks.append(_block(5, struct.pack("<III", 0, 0, 0)))
        if n == 9:
            blocks.append(_epb(3, t2 // 10**6, _sll(f2)))
            blocks.append(_epb(0, t2, f2, caplen=len(f2) + 9))    # more than the block holds
    for ts, f in frames["vethc2"][8:]:
        blocks.append(_epb(0, ts, f))
    path = tmp_path / "multi.pcapng"
    data = b"".join(blocks)
    path.write_bytes(data[:-21])                 # the last EPB cut short
    assert _fast_ethernet(path.read_bytes(), "multi", {}, []) is not None
    got = _same(path, "multi", monkeypatch)
    stats = decode_pcap(path, "multi")[1]
    assert stats.link_types == (1, 113) and stats.records == len(blocks) - 6 - 1  # 6 not EPBs
    assert len(got) > 60 and got[-1].index < stats.records
    cooked = [p for p in got if p.dst_mac == ""]
    assert len(cooked) == 1 and cooked[0].ts_ns % 10**6 == 0         # 1/1000 s ticks
    micro = sum(p.ts_ns % 1000 == 0 for p in got)                    # and finer stamps
    assert 20 < micro < len(got)


def _ipv4_frames(iface: str) -> list[bytes]:
    return [f for _lt, _ts, f in read_records(NAPT / "pcap" / f"{iface}.pcap") if f[12:14] == b"\x08\x00"]


def test_a_simple_packet_block_leaves_the_file_to_the_general_decoder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = _ipv4_frames("eth0")[:6]
    spb = _block(3, struct.pack("<I", len(frames[2])) + frames[2])
    path = tmp_path / "spb.pcapng"
    path.write_bytes(_shb() + _idb(1) + _epb(0, 10**15, frames[0]) + _epb(0, 10**15 + 1, frames[1])
                     + spb + b"".join(_epb(0, 10**15 + n, f) for n, f in enumerate(frames[3:], 3)))
    assert _fast_ethernet(path.read_bytes(), "x", {}, []) is None
    got = _same(path, "x", monkeypatch)
    assert [p.index for p in got] == list(range(6))
    assert [p.ts_ns for p in got] == [10**18, 10**18 + 1000, 0, 10**18 + 3000, 10**18 + 4000,
                                      10**18 + 5000]        # an SPB has no time
    assert [p.length for p in got] == [len(f) - 14 for f in frames]


def test_an_interface_description_between_packets_keeps_their_clock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A later IDB must not change how the EPBs of an interface already in use are timed."""
    frames = _ipv4_frames("eth0")[:2]
    ticks = 1_800_000_000 * 2**20 + 12345
    path = tmp_path / "idb.pcapng"
    path.write_bytes(_shb() + _idb(1, _opt(9, bytes([0x80 | 20]))) + _epb(0, ticks, frames[0])
                     + _idb(1, _opt(9, bytes([9]))) + _epb(0, ticks + 2**20, frames[1]))
    assert _fast_ethernet(path.read_bytes(), "x", {}, []) is not None
    got = _same(path, "x", monkeypatch)
    assert [p.ts_ns for p in got] == [ticks * 10**9 // 2**20, (ticks + 2**20) * 10**9 // 2**20]

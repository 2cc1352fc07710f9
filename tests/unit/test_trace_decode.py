"""decode.py: hot fields from raw pcap/pcapng bytes, checked on the real fixture and on frames
built with scapy (whose dissection is the reference)."""
from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, CookedLinux, Dot1Q, Ether
from scapy.utils import PcapNgWriter, PcapWriter

from netsim.errors import TraceError
from netsim.trace.decode import (
    TCP_FLAG_ORDER,
    decode_pcap,
    read_pcap,
    read_records,
    scapy_packets,
    to_scapy,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "trace_napt"
PCAPS = FIXTURE / "pcap"


def test_fixture_counts_and_skips():
    for iface in ("vethc2", "docker0", "eth0"):
        packets, stats = decode_pcap(PCAPS / f"{iface}.pcap", iface)
        assert stats.records == stats.decoded + stats.skipped_non_ipv4 + stats.skipped_truncated
        assert stats.decoded == len(packets) >= 20
        assert stats.link_types == (1,)
        assert [p.index for p in packets] == sorted(p.index for p in packets)
        assert all(p.iface == iface for p in packets)
        assert [p.ts_ns for p in packets] == sorted(p.ts_ns for p in packets)
        assert all(abs(p.ts - p.ts_ns / 1e9) < 1e-6 for p in packets)


def test_fixture_snat_and_dnat_views():
    eth0 = read_pcap(PCAPS / "eth0.pcap", "eth0")
    veth = read_pcap(PCAPS / "vethc2.pcap", "vethc2")
    udp_out = [p for p in eth0 if p.tuple.proto == "udp" and p.tuple.dport == 9000]
    assert udp_out and udp_out[0].tuple.src == "203.0.113.2" and udp_out[0].tuple.sport == 40000
    assert udp_out[0].payload_hash == zlib.crc32(b"ping")
    assert udp_out[0].src_mac == "02:00:cb:00:71:02" and udp_out[0].dst_mac == "02:00:cb:00:71:01"
    dnat = [p for p in eth0 if p.tuple.dport == 8080 and p.tcp_flags == "S"]
    assert dnat and dnat[0].tuple.dst == "203.0.113.2" and dnat[0].tuple.src == "198.51.100.20"
    inside = [p for p in veth if p.tuple.dport == 80 and p.tuple.src == "198.51.100.20"
              and p.tcp_flags == "S"]
    assert inside and inside[0].tuple.dst == "172.17.0.2" and inside[0].ip_id == dnat[0].ip_id
    assert inside[0].ttl == dnat[0].ttl - 1
    flags = {p.tcp_flags for p in veth if p.tuple.proto == "tcp"}
    assert {"S", "SA", "A", "PA", "FA"} <= flags
    hello = [p for p in veth if p.payload_hash == zlib.crc32(b"hello netsim")]
    assert len(hello) == 1 and hello[0].tcp_flags == "PA" and hello[0].length == 20 + 32 + 12
    echo = [p for p in veth if p.tuple.proto == "icmp"]
    assert {p.icmp_type for p in echo} == {0, 8}
    assert all(p.tuple.sport == p.tuple.dport != 0 for p in echo)


def _write(tmp: Path, name: str, frames, linktype: int | None = None, nano: bool = False) -> Path:
    path = tmp / name
    w = PcapWriter(str(path), linktype=linktype, nano=nano, sync=True)
    for f in frames:
        w.write(f)
    w.close()
    return path


def _ref(frame):
    """What scapy says about an Ethernet/IP frame."""
    ip = Ether(bytes(frame))[IP]
    return ip.src, ip.dst, ip.id, ip.len, ip.ttl


def test_matches_scapy_on_synthetic_ethernet(tmp_path: Path):
    frames = [
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") /
        IP(src="172.17.0.2", dst="198.51.100.10", id=7, ttl=64) /
        TCP(sport=40001, dport=80, flags="SA", seq=1000, ack=2000) / b"abc",
        Ether() / IP(src="172.17.0.3", dst="198.51.100.10", id=0, ttl=5) / UDP(sport=5, dport=53) / b"q",
        Ether() / IP(src="172.17.0.2", dst="198.51.100.10") / ICMP(type=8, id=0x1234, seq=1) / b"e",
        Ether() / IP(src="198.51.100.10", dst="172.17.0.2") / ICMP(type=3, code=3) / IP() / UDP(),
        Ether() / Dot1Q(vlan=5) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2),
        Ether() / IP(src="10.0.0.1", dst="10.0.0.2", proto=17, frag=100) / b"frag-tail",
        Ether() / IP(src="10.0.0.1", dst="10.0.0.2", proto=47) / b"gre-ish",
        Ether() / ARP(),
        Ether() / IPv6() / UDP(),
        Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / b"x",
    ]
    # Ethernet padding must not leak into the payload hash: pad the last frame to 60 bytes
    frames[-1] = Ether(bytes(frames[-1]) + b"\0" * 20)
    path = _write(tmp_path, "syn.pcap", frames)
    packets, stats = decode_pcap(path, "x0")
    assert stats.records == 10 and stats.decoded == 8 and stats.skipped_non_ipv4 == 2
    assert [p.index for p in packets] == [0, 1, 2, 3, 4, 5, 6, 9]
    p = packets[0]
    assert (p.tuple.src, p.tuple.dst, p.ip_id, p.length, p.ttl) == _ref(frames[0])
    assert (p.tuple.proto, p.tuple.sport, p.tuple.dport) == ("tcp", 40001, 80)
    assert (p.tcp_flags, p.tcp_seq, p.tcp_ack) == ("SA", 1000, 2000)
    assert p.payload_hash == zlib.crc32(b"abc")
    assert (p.src_mac, p.dst_mac) == ("02:00:00:00:00:01", "02:00:00:00:00:02")
    assert packets[1].tuple.proto == "udp" and packets[1].ip_id == 0 and packets[1].ttl == 5
    assert packets[1].payload_hash == zlib.crc32(b"q")
    icmp = packets[2]
    assert (icmp.icmp_type, icmp.tuple.sport, icmp.tuple.dport) == (8, 0x1234, 0x1234)
    assert icmp.payload_hash == zlib.crc32(b"e")
    err = packets[3]
    assert err.icmp_type == 3 and err.tuple.sport == err.tuple.dport == 0
    assert packets[4].tuple == packets[4].tuple.__class__("udp", "10.0.0.1", 1, "10.0.0.2", 2)
    frag = packets[5]
    assert frag.tuple.sport == 0 and frag.payload_hash == zlib.crc32(b"frag-tail")
    assert packets[6].tuple.proto == "47" and packets[6].payload_hash == zlib.crc32(b"gre-ish")
    assert packets[7].payload_hash == zlib.crc32(b"x")


def test_tcp_flag_letters_fixed_order(tmp_path: Path):
    assert TCP_FLAG_ORDER == "FSRPAUEC"
    frames = [Ether() / IP() / TCP(flags=f) for f in ("S", "SA", "PA", "FA", "R", "RA", "SEC", "")]
    got = [p.tcp_flags for p in read_pcap(_write(tmp_path, "f.pcap", frames), "x")]
    assert got == ["S", "SA", "PA", "FA", "R", "RA", "SEC", ""]


def test_cooked_sll_and_nanosecond(tmp_path: Path):
    frames = [CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\0\0\0\0\x09\0\0",
                          proto=0x0800) / IP(src="1.2.3.4", dst="5.6.7.8") / UDP(sport=9, dport=10)]
    frames[0].time = 1700000000.123456789
    path = _write(tmp_path, "sll.pcap", frames, linktype=113, nano=True)
    [p] = read_pcap(path, "any")
    assert p.tuple.src == "1.2.3.4" and p.tuple.dport == 10 and p.src_mac == "02:00:00:00:00:09"
    assert p.dst_mac == ""
    assert abs(p.ts_ns - 1700000000123456789) < 1000


def test_sll2_raw_bytes(tmp_path: Path):
    ip = bytes(IP(src="9.9.9.9", dst="8.8.8.8", id=99) / UDP(sport=1, dport=2) / b"z")
    sll2 = struct.pack("!HHIHBB8s", 0x0800, 0, 3, 1, 0, 6, b"\x02\x11\x22\x33\x44\x55\0\0")
    path = tmp_path / "sll2.pcap"
    hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 276)
    rec = struct.pack("<IIII", 1, 5, len(sll2 + ip), len(sll2 + ip))
    path.write_bytes(hdr + rec + sll2 + ip)
    [p] = read_pcap(path, "any")
    assert (p.tuple.src, p.ip_id, p.src_mac) == ("9.9.9.9", 99, "02:11:22:33:44:55")
    assert p.ts_ns == 1_000_005_000


def test_pcapng(tmp_path: Path):
    frames = [Ether() / IP(src="1.1.1.1", dst="2.2.2.2", id=i) / UDP(sport=i, dport=1) for i in range(3)]
    for i, f in enumerate(frames):
        f.time = 1800000000 + i / 1000
    path = tmp_path / "x.pcapng"
    w = PcapNgWriter(str(path))
    for f in frames:
        w.write(f)
    w.close()
    packets = read_pcap(path, "ng0")
    assert [p.ip_id for p in packets] == [0, 1, 2]
    assert abs(packets[2].ts - 1800000000.002) < 1e-5


def test_truncated_tail_is_ignored(tmp_path: Path):
    path = _write(tmp_path, "t.pcap", [Ether() / IP() / UDP()] * 3)
    data = path.read_bytes()
    path.write_bytes(data[:-5])          # tcpdump killed mid-record
    assert len(read_pcap(path, "x")) == 2


def test_errors_name_the_path(tmp_path: Path):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture file at all")
    with pytest.raises(TraceError, match="bad.pcap"):
        read_pcap(bad, "x")
    with pytest.raises(TraceError, match="missing.pcap"):
        read_pcap(tmp_path / "missing.pcap", "x")
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    assert read_pcap(empty, "x") == []


def test_scapy_helpers():
    objs = scapy_packets(PCAPS / "eth0.pcap", indices={0, 1})
    assert len(objs) == 2 and objs[0].haslayer(Ether)
    linktype, _ts, frame = next(read_records(PCAPS / "eth0.pcap"))
    assert to_scapy(frame, linktype).haslayer(Ether)


def test_decode_rate(tmp_path: Path):
    """Read + decode must run well above 200k packets/s on the dev machine (CI bound: 100k)."""
    records = [frame for _lt, _ts, frame in read_records(PCAPS / "docker0.pcap")]
    big = tmp_path / "big.pcap"
    n = 0
    with open(big, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        while n < 60_000:
            for frame in records:
                fh.write(struct.pack("<IIII", 1800000000, n % 1_000_000, len(frame), len(frame)))
                fh.write(frame)
                n += 1
    t0 = time.perf_counter()
    packets = read_pcap(big, "docker0")
    rate = len(packets) / (time.perf_counter() - t0)
    print(f"decode rate: {rate:,.0f} packets/s")
    assert len(packets) >= 50_000
    assert rate > 100_000

"""Tracer benchmarks: live capture completeness under a burst, and offline analysis speed.

``capture_burst`` needs root.  It builds a Docker-shaped path in throwaway namespaces
(``nstr-<random>-*``; nothing in the machine's root namespace)::

    ctr eth0 172.17.0.2 ─veth─ host: vethc ⊂ docker0 172.17.0.1/16, eth0 203.0.113.2 (MASQUERADE)
        ─veth─ isp: wan0 203.0.113.1, lan0 198.51.100.1 ─veth─ srv eth0 198.51.100.10 (drops it)

and sends a burst of small UDP datagrams (each carrying its sequence number, so every one is a
distinct packet to the journey matcher) from a Python socket in ``ctr``.  Five interfaces are
captured — host ``vethc``, ``docker0``, ``eth0`` and isp ``wan0``, ``lan0`` — each *twice at
the same time*: once as netsim captures (``Capture``: 32 MiB ring, drain wait before SIGINT)
and once by a plain ``tcpdump -i IF -w FILE`` (the anchor).  Both are stopped at the same
moment.  Per interface it reports the datagrams sent, how many the kernel's interface counters
say crossed the interface, how many of them each capture wrote, and the kernel's drop counts.

netsim's capture is written as a trace directory (manifest, events, pcap/), its pcaps turned
into pcapng as ``netsim run`` does (the conversion is timed), so the same burst can be analysed
offline: ``analysis_rate`` times capture file -> packets -> journeys on it, next to scapy's
``RawPcapReader`` (record reading only) and scapy's full dissection on a sample.  With
``classic_dir`` a twin of the trace keeps tcpdump's classic pcaps, to time both containers on
the same packets.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from netsim.trace.capture import Capture, stop_captures
from netsim.trace.decode import read_pcap
from netsim.trace.testbed import Netns, Testbed

__all__ = [
    "BURST_PORT",
    "AnalysisResult",
    "BurstInterface",
    "BurstRun",
    "analysis_rate",
    "capture_burst",
]

BURST_PORT = 9999
DEFAULT_COUNT = 200_000

_SENDER = r"""
import socket, struct, sys, time
count, size, dst, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
pad = b"x" * max(0, size - 4)
pack = struct.Struct("!I").pack
addr = (dst, port)
sent = 0
t0 = time.perf_counter()
for i in range(count):
    payload = pack(i) + pad
    while True:
        try:
            s.sendto(payload, addr)
            sent += 1
            break
        except BlockingIOError:
            time.sleep(0.0001)
        except OSError as exc:            # ENOBUFS: the qdisc refused it; try again
            if exc.errno != 105:
                raise
            time.sleep(0.0001)
print(sent, time.perf_counter() - t0)
"""

# (namespace role, interface, trace role) in path order
_CAPTURED = (("host", "vethc", "veth"), ("host", "docker0", "bridge"), ("host", "eth0", "nic"),
             ("isp", "wan0", "upstream"), ("isp", "lan0", "upstream"))


@dataclass(frozen=True)
class BurstInterface:
    """One captured interface's view of the burst: netsim's capture and plain tcpdump's."""

    name: str
    netns: str
    sent: int                   # datagrams the sender sent
    iface_packets: int          # rx+tx packets the interface's kernel counters moved meanwhile
    kept: int                   # burst datagrams in netsim's pcap
    kernel_drops: int           # libpcap ps_drop for netsim's capture
    if_drops: int
    not_written: int            # seen by the kernel, never written (stopped before draining)
    tcpdump_kept: int | None    # burst datagrams in plain tcpdump's pcap (None: not run)
    tcpdump_kernel_drops: int | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class BurstRun:
    count: int
    size: int
    sent: int
    send_rate: float            # datagrams/s the sender achieved
    interfaces: list[BurstInterface]
    trace_dir: Path | None = None   # netsim's capture as a trace directory (when kept)
    convert_records: int = 0        # pcap records rewritten as pcapng (all interfaces)
    convert_s: float = 0.0          # the time that took
    classic_trace_dir: Path | None = None   # the same trace with tcpdump's classic pcaps

    @property
    def convert_ms_per_100k(self) -> float:
        return self.convert_s / self.convert_records * 1e8 if self.convert_records else 0.0

    @property
    def lossless(self) -> bool:
        return all(i.kept == self.sent and i.kernel_drops == 0 and i.not_written == 0
                   for i in self.interfaces)


@dataclass
class AnalysisResult:
    """Offline analysis of one trace directory; rates in packets per second."""

    trace_dir: str
    container: str                # capture files: "pcapng", "pcap" or "pcap+pcapng"
    packets: int
    journeys: int
    runs: int
    decode_per_s: float           # pcap -> Packet records (median of runs)
    journeys_per_s: float         # Packet records -> journeys
    packets_per_s: float          # pcap -> journeys, end to end (the headline number)
    with_hops_per_s: float        # ... and every Hop with its changes built (they are lazy)
    anchors: dict[str, float] = field(default_factory=dict)   # scapy, same files, same run

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _counters(bed: Testbed, ns: Netns, iface: str) -> int:
    out = bed.run(["ip", "-n", ns.name, "-j", "-s", "link", "show", "dev", iface]).stdout
    st = json.loads(out)[0]["stats64"]
    return int(st["rx"]["packets"]) + int(st["tx"]["packets"])


def _build_path(bed: Testbed) -> dict[str, Netns]:
    ctr, host, isp, srv = bed.add("ctr"), bed.add("host"), bed.add("isp"), bed.add("srv")
    bed.veth(ctr, "eth0", host, "vethc")
    bed.veth(host, "eth0", isp, "wan0")
    bed.veth(isp, "lan0", srv, "eth0")
    bed.ip(host, "link add docker0 type bridge", "link set docker0 up",
           "link set vethc master docker0", "addr add 172.17.0.1/16 dev docker0")
    bed.addr(ctr, "eth0", "172.17.0.2/16")
    bed.addr(host, "eth0", "203.0.113.2/24")
    bed.addr(isp, "wan0", "203.0.113.1/24")
    bed.addr(isp, "lan0", "198.51.100.1/24")
    bed.addr(srv, "eth0", "198.51.100.10/24")
    bed.ip(ctr, "route add default via 172.17.0.1")
    bed.ip(host, "route add default via 203.0.113.1")
    bed.ip(srv, "route add default via 198.51.100.1")
    for ns in (host, isp):
        bed.sysctl(ns, "net.ipv4.ip_forward=1")
    bed.iptables(host, "-t", "nat", "-A", "POSTROUTING", "-s", "172.17.0.0/16", "!", "-o",
                 "docker0", "-j", "MASQUERADE")
    bed.iptables(srv, "-A", "INPUT", "-p", "udp", "--dport", str(BURST_PORT), "-j", "DROP")
    return {"ctr": ctr, "host": host, "isp": isp, "srv": srv}


def _count_burst(path: Path, iface: str, size: int) -> int:
    want = 28 + size
    return sum(1 for p in read_pcap(path, iface)
               if p.length == want and p.tuple.proto == "udp" and p.tuple.dport == BURST_PORT)


def capture_burst(count: int = DEFAULT_COUNT, size: int = 16, buffer_kib: int = 32768,
                  plain_tcpdump: bool = True, trace_dir: Path | None = None,
                  work_dir: Path | None = None, classic_dir: Path | None = None) -> BurstRun:
    """Send ``count`` datagrams along the path while capturing it both ways (module docstring).

    ``trace_dir``: write netsim's capture there as a trace directory (else a temporary one,
    removed on return).  ``classic_dir``: also write the trace there with the classic pcaps
    tcpdump wrote (format version 1), before they are converted.
    """
    from netsim.trace.store import TraceWriter

    with tempfile.TemporaryDirectory(prefix="nstr-burst-", dir=work_dir) as tmp, \
            Testbed() as bed:
        out = Path(trace_dir) if trace_dir is not None else Path(tmp) / "trace"
        writer = TraceWriter(out)
        ns = _build_path(bed)
        # resolve neighbours (and create the conntrack entry) before the burst
        bed.python(ns["ctr"], "import socket;s=socket.socket(2,2);"
                              f"s.sendto(b'warm',('198.51.100.10',{BURST_PORT}))")
        time.sleep(0.2)
        by_ns: dict[str, list[str]] = {}
        for role, iface, _ in _CAPTURED:
            by_ns.setdefault(role, []).append(iface)
        ours = [Capture(ns[role].path, ifaces, writer.pcap_dir, buffer_kib)
                for role, ifaces in by_ns.items()]
        plain = [Capture(ns[role].path, ifaces, Path(tmp) / "plain", plain=True, drain_s=0.0)
                 for role, ifaces in by_ns.items()] if plain_tcpdump else []
        before = {iface: _counters(bed, ns[role], iface) for role, iface, _ in _CAPTURED}
        started: list[Capture] = []
        try:
            for cap in ours + plain:
                cap.start()
                started.append(cap)
            line = bed.python(ns["ctr"], _SENDER, str(count), str(size), "198.51.100.10",
                              str(BURST_PORT), timeout=600).split()
        finally:
            stop_captures(started, timeout=10)     # one drain wait, then SIGINT to all of them
        stats = {s.iface: s for c in ours for s in c.stats or []}
        plain_stats = {s.iface: s for c in plain for s in c.stats or []}
        after = {iface: _counters(bed, ns[role], iface) for role, iface, _ in _CAPTURED}
        sent, secs = int(line[0]), float(line[1])
        interfaces = {iface: {"role": trole, "netns": ns[role].name, "addresses": []}
                      for role, iface, trole in _CAPTURED}
        if classic_dir is not None:
            shutil.copytree(writer.pcap_dir, Path(classic_dir) / "pcap")
        t0 = time.perf_counter()
        converted = writer.convert_pcaps(interfaces, stats.values(), f"Linux {os.uname().release}")
        convert_s = time.perf_counter() - t0
        rows = []
        for role, iface, _ in _CAPTURED:
            st = stats[iface]
            pst = plain_stats.get(iface)
            rows.append(BurstInterface(
                name=iface, netns=role, sent=sent, iface_packets=after[iface] - before[iface],
                kept=_count_burst(writer.pcap_dir / f"{iface}.pcapng", iface, size),
                kernel_drops=st.kernel_drops, if_drops=st.if_drops, not_written=st.not_written,
                tcpdump_kept=None if pst is None else
                _count_burst(Path(tmp) / "plain" / f"{iface}.pcap", iface, size),
                tcpdump_kernel_drops=None if pst is None else pst.kernel_drops))
        writer.append_event({"type": "bench", "what": "udp burst", "count": count,
                             "size": size, "sent": sent, "seconds": secs})
        drops = sum(s.kernel_drops + s.if_drops + s.not_written for s in stats.values())
        manifest = writer.write_manifest({
            "scenario": {"name": "bench-tracer-burst", "count": count, "size": size},
            "engine": "testbed",
            "interfaces": interfaces,
            "capture": list(stats.values()),
            "conntrack_overflows": 0,
            "complete": drops == 0,
        })
        if classic_dir is not None:
            shutil.copy(writer.dir / "events.jsonl", Path(classic_dir) / "events.jsonl")
            data = json.loads(manifest.read_text())
            data["format_version"] = 1          # tcpdump's pcaps: the version-1 layout
            (Path(classic_dir) / manifest.name).write_text(json.dumps(data, indent=2) + "\n")
        return BurstRun(count, size, sent, sent / secs if secs > 0 else 0.0, rows,
                        Path(trace_dir) if trace_dir is not None else None,
                        sum(converted.values()), convert_s,
                        Path(classic_dir) if classic_dir is not None else None)


def _median_rate(n: int, times: list[float]) -> float:
    t = statistics.median(times)
    return n / t if t > 0 else float("inf")


def analysis_rate(trace_dir: Path, runs: int = 3, anchors: bool = True,
                  anchor_sample: int = 20_000) -> AnalysisResult:
    """Time pcap -> packets -> journeys on a trace directory (median of ``runs``).

    Anchors, measured in the same call on the same files: scapy's ``RawPcapReader`` (records
    only, no decoding) and scapy's full dissection (``rdpcap``) of the first ``anchor_sample``
    records of the largest file.
    """
    from netsim.trace.journeys import build_journeys
    from netsim.trace.store import TraceReader

    reader = TraceReader(Path(trace_dir))
    order = reader.tie_order()
    container = "+".join(sorted({reader.pcap_path(i).suffix.lstrip(".") for i in order})) or "none"
    t_decode: list[float] = []
    t_journeys: list[float] = []
    t_hops: list[float] = []
    n_packets = n_journeys = 0
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        packets = reader.packets()
        t1 = time.perf_counter()
        journeys = build_journeys(packets, tie_order=order)
        t2 = time.perf_counter()
        for j in journeys:                  # what a reader of every hop's changes pays on top
            for h in j.hops:
                h.changed  # noqa: B018
        t3 = time.perf_counter()
        n_packets, n_journeys = len(packets), len(journeys)
        t_decode.append(t1 - t0)
        t_journeys.append(t2 - t1)
        t_hops.append(t3 - t2)
        del packets, journeys
    total = [a + b for a, b in zip(t_decode, t_journeys, strict=True)]
    result = AnalysisResult(str(trace_dir), container, n_packets, n_journeys, len(total),
                            _median_rate(n_packets, t_decode), _median_rate(n_packets, t_journeys),
                            _median_rate(n_packets, total),
                            _median_rate(n_packets, [a + b for a, b in zip(total, t_hops, strict=True)]))
    if anchors:
        result.anchors = _scapy_anchors(reader, anchor_sample)
    return result


def _scapy_anchors(reader: Any, sample: int) -> dict[str, float]:
    try:
        import scapy.layers.l2  # noqa: F401 - registers Ethernet for rdpcap
        from scapy.utils import RawPcapReader, rdpcap
    except ImportError:         # scapy is a dependency, but the numbers are only context
        return {}
    paths = [reader.pcap_path(i) for i in reader.interfaces]

    def timed(fn: Callable[[], int]) -> float:
        t0 = time.perf_counter()
        n = fn()
        dt = time.perf_counter() - t0
        return n / dt if dt > 0 else float("inf")

    def raw() -> int:
        n = 0
        for p in paths:
            with RawPcapReader(str(p)) as r:
                for _ in r:
                    n += 1
        return n
    largest = max(paths, key=lambda p: p.stat().st_size)
    return {"scapy_RawPcapReader_records_per_s": timed(raw),
            "scapy_rdpcap_dissect_per_s": timed(lambda: len(rdpcap(str(largest), count=sample)))}

"""Tracer benchmarks: offline analysis rate and live capture completeness under a burst.

``analysis_rate`` is pure (reads a trace directory).  ``capture_burst`` needs root: it builds
three throwaway namespaces (sender -> router -> receiver), captures on the sender's NIC and on
both router interfaces, blasts small UDP datagrams from a Python socket in the sender, and
reports, per interface, how many were sent, how many of them are in the pcap and what libpcap
says the kernel dropped.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from netsim.trace.capture import Capture, stop_captures
from netsim.trace.decode import read_pcap
from netsim.trace.testbed import Testbed

__all__ = [
    "BURST_PORT",
    "BurstResult",
    "analysis_rate",
    "capture_burst",
    "compare_with_tcpdump_defaults",
]

BURST_PORT = 9999

_SENDER = r"""
import socket, sys, time
count, size, dst, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
payload = b"x" * size
sent = 0
t0 = time.perf_counter()
for _ in range(count):
    while True:
        try:
            s.sendto(payload, (dst, port))
            sent += 1
            break
        except BlockingIOError:
            time.sleep(0.0001)
        except OSError as exc:            # ENOBUFS: the kernel refused it; try again
            if exc.errno != 105:
                raise
            time.sleep(0.0001)
print(sent, time.perf_counter() - t0)
"""


@dataclass(frozen=True)
class BurstResult:
    """One capture point's view of the burst."""

    iface: str
    sent: int
    matched: int          # burst datagrams found in this interface's pcap
    kept: int             # tcpdump's "packets captured" (burst + ARP and the like)
    received: int         # libpcap's "packets received by filter"
    kernel_drops: int
    if_drops: int
    not_written: int      # counted by the kernel, never written (stopped before the ring drained)
    send_rate: float      # datagrams/s the sender achieved

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def analysis_rate(trace_dir: Path) -> float:
    """Packets per second from a trace directory's pcaps to journeys (decode + match)."""
    from netsim.trace.journeys import build_journeys
    from netsim.trace.store import TraceReader

    reader = TraceReader(Path(trace_dir))
    t0 = time.perf_counter()
    packets = reader.packets()
    build_journeys(packets)
    elapsed = time.perf_counter() - t0
    return len(packets) / elapsed if elapsed > 0 else float("inf")


def capture_burst(count: int = 100_000, size: int = 16, buffer_kib: int = 32768,
                  snaplen: int = 262144, work_dir: Path | None = None,
                  immediate: bool = False, drain_s: float | None = None) -> list[BurstResult]:
    """Send ``count`` UDP datagrams through a router while capturing; see module docstring."""
    with tempfile.TemporaryDirectory(prefix="nstr-burst-", dir=work_dir) as tmp, \
            Testbed() as bed:
        out = Path(tmp)
        snd, rtr, rcv = bed.add("snd"), bed.add("rtr"), bed.add("rcv")
        bed.veth(snd, "eth0", rtr, "ra")
        bed.veth(rtr, "rb", rcv, "eth0")
        bed.addr(snd, "eth0", "172.17.0.2/16")
        bed.addr(rtr, "ra", "172.17.0.1/16")
        bed.addr(rtr, "rb", "198.51.100.1/24")
        bed.addr(rcv, "eth0", "198.51.100.10/24")
        bed.ip(snd, "route add default via 172.17.0.1")
        bed.ip(rcv, "route add default via 198.51.100.1")
        bed.sysctl(rtr, "net.ipv4.ip_forward=1")
        bed.iptables(rcv, "-A", "INPUT", "-p", "udp", "--dport", str(BURST_PORT), "-j", "DROP")
        # resolve neighbours first so the burst is not queued behind ARP
        bed.python(snd, "import socket;s=socket.socket(2,2);s.sendto(b'warm',('198.51.100.10',9))")
        captures = [Capture(snd.path, ["eth0"], out / "snd", buffer_kib, snaplen,
                            immediate=immediate, drain_s=drain_s),
                    Capture(rtr.path, ["ra", "rb"], out / "rtr", buffer_kib, snaplen,
                            immediate=immediate, drain_s=drain_s)]
        for cap in captures:
            cap.start()
        try:
            line = bed.python(snd, _SENDER, str(count), str(size), "198.51.100.10", str(BURST_PORT),
                              timeout=300).split()
        finally:
            stats = stop_captures(captures)
        sent, secs = int(line[0]), float(line[1])
        pcaps = {"eth0": out / "snd" / "eth0.pcap", "ra": out / "rtr" / "ra.pcap",
                 "rb": out / "rtr" / "rb.pcap"}
        results = []
        for st in stats:
            matched = sum(1 for p in read_pcap(pcaps[st.iface], st.iface)
                          if p.tuple.proto == "udp" and p.tuple.dport == BURST_PORT
                          and p.length == 28 + size)
            results.append(BurstResult(st.iface, sent, matched, st.kept, st.received, st.kernel_drops,
                                       st.if_drops, st.not_written, sent / secs if secs > 0 else 0.0))
        return results


def compare_with_tcpdump_defaults(count: int = 100_000) -> dict[str, list[BurstResult]]:
    """The same burst captured as netsim does and as plain ``tcpdump -w`` + Ctrl-C would.

    "tcpdump-defaults" uses tcpdump's default 2 MiB buffer and SIGINT right after the burst
    (no drain wait), which loses the ring's last, unfilled block.
    """
    return {"netsim": capture_burst(count),
            "tcpdump-defaults": capture_burst(count, buffer_kib=2048, drain_s=0.0)}

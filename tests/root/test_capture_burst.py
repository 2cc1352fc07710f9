"""Live capture and conntrack events in throwaway namespaces (root; nothing in the root netns)."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from netsim.errors import CommandError
from netsim.trace.bench import BURST_PORT, capture_burst
from netsim.trace.capture import Capture
from netsim.trace.conntrack import ConntrackWatcher, dump_table
from netsim.trace.decode import read_pcap
from netsim.trace.records import FiveTuple
from netsim.trace.store import TraceReader
from netsim.trace.testbed import Testbed

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (creates network namespaces)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("tcpdump", "conntrack", "nsenter", "ip",
                                                          "iptables")),
                       reason="needs tcpdump, conntrack, nsenter, iproute2 and iptables"),
]


def test_burst_of_200k_is_kept_on_every_interface(tmp_path: Path):
    """The bench's path (veth, bridge, NIC with MASQUERADE, two upstream interfaces): sent = kept."""
    run = capture_burst(200_000, plain_tcpdump=False, trace_dir=tmp_path / "trace")
    assert [i.name for i in run.interfaces] == ["vethc", "docker0", "eth0", "wan0", "lan0"]
    assert run.sent == 200_000
    for r in run.interfaces:
        print(r)
        assert r.kept == r.sent, r
        assert r.kernel_drops == 0 and r.if_drops == 0 and r.not_written == 0, r
        assert r.iface_packets >= r.sent
    assert run.lossless
    # netsim's captures became pcapng (every record of the five pcaps), and fast enough
    assert run.convert_records >= 5 * 200_000
    assert not list((tmp_path / "trace" / "pcap").glob("*.pcap"))
    print(f"pcap -> pcapng: {run.convert_ms_per_100k:.0f} ms per 100k records")
    assert run.convert_ms_per_100k < 1000
    # the burst is a readable trace: every datagram is one journey across all five, SNAT at eth0
    reader = TraceReader(tmp_path / "trace")
    assert reader.manifest["complete"]
    packets, journeys = reader.analyse()
    burst = [j for j in journeys if j.first.tuple.dport == BURST_PORT and j.first.length == 44]
    assert len(burst) == 200_000
    j = burst[-1]
    assert j.interfaces == ("vethc", "docker0", "eth0", "wan0", "lan0")
    assert j.hops[2].changed == {"src": ("172.17.0.2", "203.0.113.2"), "ttl": (64, 63)}


def _router_lab(bed: Testbed):
    ctr, rtr, srv = bed.add("ctr"), bed.add("rtr"), bed.add("srv")
    bed.veth(ctr, "eth0", rtr, "lan0")
    bed.veth(rtr, "wan0", srv, "eth0")
    bed.addr(ctr, "eth0", "172.17.0.2/16")
    bed.addr(rtr, "lan0", "172.17.0.1/16")
    bed.addr(rtr, "wan0", "198.51.100.1/24")
    bed.addr(srv, "eth0", "198.51.100.10/24")
    bed.ip(ctr, "route add default via 172.17.0.1")
    bed.sysctl(rtr, "net.ipv4.ip_forward=1")
    bed.iptables(rtr, "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE")
    return ctr, rtr, srv


UDP_ECHO = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 9000))
print("ready", flush=True); s.settimeout(10)
d, a = s.recvfrom(100); s.sendto(d, a)
"""
UDP_CLIENT = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 40000)); s.settimeout(5)
s.sendto(b"hello", ("198.51.100.10", 9000)); print(s.recvfrom(100)[1])
"""


def test_masquerade_flow_gives_new_with_both_tuples(tmp_path: Path):
    with Testbed() as bed:
        ctr, rtr, srv = _router_lab(bed)
        watcher = ConntrackWatcher(rtr.path)
        watcher.start()
        with Capture(rtr.path, ["lan0", "wan0"], tmp_path) as cap:
            server = bed.popen_python(srv, UDP_ECHO)
            assert server.stdout is not None and b"ready" in server.stdout.readline()
            bed.python(ctr, UDP_CLIENT)
            bed.wait(server)
        events, overflows = watcher.stop()
        table = dump_table(rtr.path)
    assert overflows == 0
    assert cap.stats is not None and all(s.complete for s in cap.stats)
    orig = FiveTuple("udp", "172.17.0.2", 40000, "198.51.100.10", 9000)
    reply = FiveTuple("udp", "198.51.100.10", 9000, "198.51.100.1", 40000)
    new = [e for e in events if e.kind == "NEW" and e.original == orig]
    assert len(new) == 1, events
    assert new[0].reply == reply and new[0].status == ("UNREPLIED",) and new[0].timeout == 30
    assert new[0].snat and not new[0].dnat
    assert any(e.kind == "UPDATE" and e.original == orig for e in events)
    assert any(e.kind == "DUMP" and e.original == orig and e.reply == reply for e in table)
    # the same clock: the NEW event follows the first datagram seen on lan0
    first = min(p.ts for p in read_pcap(tmp_path / "lan0.pcap", "lan0") if p.tuple == orig)
    assert 0 <= new[0].ts - first < 0.5
    wan = [p for p in read_pcap(tmp_path / "wan0.pcap", "wan0") if p.tuple.dport == 9000]
    assert wan and wan[0].tuple.src == "198.51.100.1" and wan[0].tuple.sport == 40000


FLOOD = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in range(20000, 26000):
    s.sendto(b"x", ("127.0.0.1", port))
"""


def test_netlink_overflow_is_reported_not_hidden():
    with Testbed() as bed:
        ns = bed.add("flood")
        # conntrack only tracks a namespace once some rule needs it
        bed.iptables(ns, "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT")
        watcher = ConntrackWatcher(ns.path, buffer_bytes=4096)
        watcher.start()
        try:
            bed.python(ns, FLOOD)
            bed.run(ns.argv("conntrack", "-F"))     # thousands of DESTROY events at once
            time.sleep(0.3)
        finally:
            events, overflows = watcher.stop()
    assert overflows > 0, watcher.stderr
    assert "ENOBUFS" in watcher.stderr
    assert len(events) < 12_000           # some were lost, and we say so


def test_capture_of_missing_interface_fails_with_tcpdump_stderr(tmp_path: Path):
    with Testbed() as bed:
        ns = bed.add("empty")
        cap = Capture(ns.path, ["nosuch0"], tmp_path)
        with pytest.raises(CommandError, match="nosuch0"):
            cap.start()
        assert not cap.running

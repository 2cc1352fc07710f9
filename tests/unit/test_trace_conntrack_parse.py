"""parse_event_line on real conntrack-tools 1.4.7 output, and the clock it stamps events with."""
from __future__ import annotations

from pathlib import Path

import pytest

from netsim.trace.conntrack import parse_event_line, parse_lines
from netsim.trace.records import FiveTuple
from netsim.trace.store import TraceReader

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "trace_napt"
RAW = FIXTURE / "raw"

# lines captured on the build machine (conntrack v1.4.7, kernel 6.18)
NEW_UDP = ("[1795905901.401389]\t    [NEW] udp      17 30 src=172.17.0.2 dst=198.51.100.10 "
           "sport=40000 dport=9000 [UNREPLIED] src=198.51.100.10 dst=198.51.100.1 sport=9000 "
           "dport=40000 id=2140783453")
ICMP_DUMP = ("ipv4     2 icmp     1 29 src=127.0.0.1 dst=127.0.0.1 type=8 code=0 id=17021 "
             "src=127.0.0.1 dst=127.0.0.1 type=0 code=0 id=17021 mark=0 delta-time=0 use=1 "
             "id=2843617329")
DESTROY_KTS = ("[1795905945.644774]\t[DESTROY] udp      17 29 src=127.0.0.1 dst=127.0.0.1 "
               "sport=35240 dport=22198 [UNREPLIED] src=127.0.0.1 dst=127.0.0.1 sport=22198 "
               "dport=35240 delta-time=0 [start=Sat Nov 28 22:45:45 2026] "
               "[stop=Sat Nov 28 22:45:45 2026] id=1370880785 [USERSPACE] portid=3997 "
               "progname=conntrack")
UNKNOWN = ("ipv4     2 unknown  2 598 src=172.17.0.1 dst=224.0.0.22 [UNREPLIED] src=224.0.0.22 "
           "dst=172.17.0.1 mark=0 delta-time=2 use=1 id=4089635735")
TCP_UPDATE = ("[1795905901.944235]\t [UPDATE] tcp      6 432000 ESTABLISHED src=172.17.0.2 "
              "dst=198.51.100.10 sport=46444 dport=80 src=198.51.100.10 dst=198.51.100.1 "
              "sport=80 dport=46444 [ASSURED] id=1687758846")


def test_new_udp_event():
    ev = parse_event_line(NEW_UDP)
    assert ev is not None
    assert ev.ts == pytest.approx(1795905901.401389) and ev.kind == "NEW"
    assert ev.original == FiveTuple("udp", "172.17.0.2", 40000, "198.51.100.10", 9000)
    assert ev.reply == FiveTuple("udp", "198.51.100.10", 9000, "198.51.100.1", 40000)
    assert ev.timeout == 30 and ev.state == "" and ev.status == ("UNREPLIED",)
    assert ev.ct_id == 2140783453 and ev.snat and not ev.dnat


def test_tcp_update_with_state():
    ev = parse_event_line(TCP_UPDATE)
    assert ev is not None and ev.kind == "UPDATE" and ev.state == "ESTABLISHED"
    assert ev.timeout == 432000 and ev.status == ("ASSURED",) and ev.ct_id == 1687758846


def test_icmp_dump_line_keeps_echo_id_apart_from_conntrack_id():
    ev = parse_event_line(ICMP_DUMP, ts=12.5)
    assert ev is not None and ev.kind == "DUMP" and ev.ts == 12.5
    assert ev.original == FiveTuple("icmp", "127.0.0.1", 17021, "127.0.0.1", 17021)
    assert ev.ct_id == 2843617329 and ev.timeout == 29


def test_destroy_with_kernel_timestamps_and_userspace_flag():
    ev = parse_event_line(DESTROY_KTS)
    assert ev is not None and ev.kind == "DESTROY" and ev.ct_id == 1370880785
    assert ev.status == ("UNREPLIED", "USERSPACE")
    assert ev.original.dport == 22198


def test_protocol_without_ports():
    ev = parse_event_line(UNKNOWN)
    assert ev is not None and ev.original == FiveTuple("2", "172.17.0.1", 0, "224.0.0.22", 0)
    assert ev.ct_id == 4089635735 and ev.status == ("UNREPLIED",)


@pytest.mark.parametrize("line", [
    "", "conntrack v1.4.7 (conntrack-tools): 8 flow events have been shown.",
    "NOTICE: Netlink socket buffer size has been set to 8192 bytes.",
    "WARNING: We have hit ENOBUFS! We are losing events.",
    "tcp 6 src=1.2.3.4",
])
def test_non_entries_are_none(line):
    assert parse_event_line(line) is None


def test_every_captured_line_parses():
    events = (RAW / "conntrack-events.txt").read_text().splitlines()
    dump = (RAW / "conntrack-dump.txt").read_text().splitlines()
    assert all(parse_event_line(line) is not None for line in events if line.strip())
    assert len(parse_lines(dump)) == len([line for line in dump if line.startswith("ipv4")])
    kinds = {e.kind for e in parse_lines(events)}
    assert {"NEW", "UPDATE"} <= kinds


def test_event_clock_is_the_packet_clock():
    """conntrack's [sec.usec] (gettimeofday at receipt) and pcap times (ktime_get_real) are both
    CLOCK_REALTIME: each NEW follows its connection's first packet by well under 50 ms."""
    reader = TraceReader(FIXTURE)
    packets = reader.packets()
    for ev in reader.conntrack_events():
        if ev.kind != "NEW" or ev.original.proto not in ("tcp", "udp", "icmp"):
            continue
        first = min(p.ts for p in packets if p.tuple == ev.original)
        assert 0 <= ev.ts - first < 0.05, (ev, first)

"""netsim.trace — capture packets and conntrack events, store them, and analyse them offline.

Effectful: :class:`Capture` (tcpdump per interface), :class:`ConntrackWatcher`,
:func:`dump_table`.  Pure (no root): :func:`read_pcap`, :func:`build_journeys`, the NAT-table
functions, and :class:`TraceReader`.
"""
from __future__ import annotations

from netsim.trace.capture import Capture, stop_captures
from netsim.trace.conntrack import ConntrackWatcher, dump_table, parse_event_line
from netsim.trace.decode import (
    DecodeStats,
    decode_pcap,
    read_pcap,
    scapy_packets,
    to_scapy,
)
from netsim.trace.journeys import build_journeys, match_key
from netsim.trace.nat_table import (
    NatTransition,
    bindings_from_conntrack,
    bindings_from_journeys,
    cross_check,
    transitions,
)
from netsim.trace.pcapng import PcapngInterface, pcap_to_pcapng, read_interfaces
from netsim.trace.records import (
    CaptureStats,
    ConntrackEvent,
    FiveTuple,
    Hop,
    Journey,
    NatBinding,
    Packet,
)
from netsim.trace.store import FORMAT_VERSION, TraceReader, TraceWriter

__all__ = [
    "FORMAT_VERSION",
    "Capture",
    "CaptureStats",
    "ConntrackEvent",
    "ConntrackWatcher",
    "DecodeStats",
    "FiveTuple",
    "Hop",
    "Journey",
    "NatBinding",
    "NatTransition",
    "Packet",
    "PcapngInterface",
    "TraceReader",
    "TraceWriter",
    "bindings_from_conntrack",
    "bindings_from_journeys",
    "build_journeys",
    "cross_check",
    "decode_pcap",
    "dump_table",
    "match_key",
    "parse_event_line",
    "pcap_to_pcapng",
    "read_interfaces",
    "read_pcap",
    "scapy_packets",
    "stop_captures",
    "to_scapy",
    "transitions",
]

"""store.py: the trace directory round trip and its errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from netsim.errors import TraceError
from netsim.trace.records import CaptureStats, ConntrackEvent, FiveTuple
from netsim.trace.store import (
    FORMAT_VERSION,
    TraceReader,
    TraceWriter,
    event_from_json,
    event_to_json,
    step_event,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "trace_napt"
EV = ConntrackEvent(1.5, "NEW", FiveTuple("udp", "172.17.0.2", 1, "198.51.100.10", 2),
                    FiveTuple("udp", "198.51.100.10", 2, "203.0.113.2", 1), "", 30,
                    ("UNREPLIED",), 42)


def test_fixture_reads():
    """trace_napt is a version-1 trace (classic pcap per interface): it still reads."""
    r = TraceReader(FIXTURE)
    assert r.manifest["format_version"] == 1 < FORMAT_VERSION and r.manifest["complete"] is True
    assert r.pcap_path("eth0").suffix == ".pcap"
    assert sorted(r.interfaces) == ["docker0", "eth0", "vethc2"]
    assert r.tie_order() == ["vethc2", "docker0", "eth0"]
    packets = r.packets()
    assert [p.ts_ns for p in packets] == sorted(p.ts_ns for p in packets)
    assert {p.iface for p in packets} == {"vethc2", "docker0", "eth0"}
    assert len(r.decode_stats) == 3
    steps = r.steps()
    assert [s["name"] for s in steps if s["phase"] == "begin"] == ["tcp_out", "udp_out",
                                                                  "icmp_out", "dnat_in"]
    stats = r.capture_stats()
    assert all(isinstance(s, CaptureStats) and s.complete for s in stats)
    assert sum(1 for e in r.conntrack_events() if e.kind == "DUMP") >= 4


def test_round_trip(tmp_path: Path):
    w = TraceWriter(tmp_path / "t")
    shutil.copy(FIXTURE / "pcap" / "eth0.pcap", w.pcap_dir / "eth0.pcap")
    w.append_event(step_event("s1", "begin", 1.0))
    w.append_events([EV, {"type": "note", "text": "hello"}])
    w.write_manifest({"scenario": {"name": "x"}, "interfaces": {"eth0": {"role": "nic"}},
                      "capture": [CaptureStats("eth0", 3, 3, 0)], "conntrack_overflows": 0,
                      "complete": True})
    r = TraceReader(tmp_path / "t")
    assert r.manifest["format_version"] == FORMAT_VERSION == 2
    assert r.manifest["scenario_sha256"] and r.manifest["capture"][0]["kept"] == 3
    assert r.capture_stats() == [CaptureStats("eth0", 3, 3, 0)]
    assert r.conntrack_events() == [EV]
    assert [e["type"] for e in r.events()] == ["step", "conntrack", "note"]
    assert r.packets() and all(p.iface == "eth0" for p in r.packets())
    assert event_from_json(json.loads(json.dumps(event_to_json(EV)))) == EV


def test_unknown_version(tmp_path: Path):
    w = TraceWriter(tmp_path)
    w.write_manifest({})
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["format_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(TraceError, match=r"manifest.json.*format_version 99"):
        TraceReader(tmp_path)


def test_missing_things_name_the_path(tmp_path: Path):
    with pytest.raises(TraceError, match="no such trace directory"):
        TraceReader(tmp_path / "nope")
    with pytest.raises(TraceError, match=r"manifest.json: missing"):
        TraceReader(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(TraceError, match="unreadable"):
        TraceReader(tmp_path)
    TraceWriter(tmp_path).write_manifest({"interfaces": {"eth9": {"role": "nic"}}})
    r = TraceReader(tmp_path)
    with pytest.raises(TraceError, match=r"pcap/eth9.pcap"):
        r.packets()
    with pytest.raises(TraceError, match=r"events.jsonl: missing"):
        r.events()
    (tmp_path / "events.jsonl").write_text('{"type": "step"}\nnot json\n')
    with pytest.raises(TraceError, match=r"events.jsonl:2"):
        r.events()
    (tmp_path / "events.jsonl").write_text('{"type": "conntrack", "ts": 1}\n')
    with pytest.raises(TraceError, match="bad conntrack event"):
        r.conntrack_events()


def test_writer_rejects_untyped_events(tmp_path: Path):
    with pytest.raises(TraceError, match="without a 'type'"):
        TraceWriter(tmp_path).append_event({"ts": 1})
    with pytest.raises(ValueError):
        step_event("x", "middle", 1.0)

"""The trace directory: what a run captured, readable offline without root.

Layout (FORMAT_VERSION 2)::

    <dir>/manifest.json        {"format_version": 2, "scenario": {...}, "scenario_sha256": ...,
                                "engine", "kernel", "tools": {...},
                                "interfaces": {name: {"role", "netns", "addresses", "mac"}},
                                "capture": [CaptureStats...], "conntrack_overflows": int,
                                "complete": bool}
    <dir>/events.jsonl         one JSON object per line, each with a "type":
                                {"type": "conntrack", <ConntrackEvent fields>}
                                {"type": "step", "name": ..., "phase": "begin"|"end", "ts": ...}
                                other types are kept and returned as they are
    <dir>/pcap/<iface>.pcapng  one pcapng per interface: its IDB names the interface (if_name)
                                and says its role and namespace (if_description); nanosecond
                                stamps (if_tsresol 9); capture counters in an ISB at the end

Version 1 differs only in the captures: ``pcap/<iface>.pcap``, classic pcap as tcpdump wrote
it.  Both versions are read (either file name is accepted in either version).

Interface names are unique within a trace (a capture of the same name in two namespaces must be
given distinct names, e.g. ``host-eth0``, by whoever writes the trace).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from operator import attrgetter
from pathlib import Path
from typing import Any

from netsim.errors import TraceError
from netsim.trace._gc import gc_paused
from netsim.trace.decode import DecodeStats, decode_pcap
from netsim.trace.journeys import ROLE_RANK
from netsim.trace.pcapng import convert_pcaps
from netsim.trace.records import CaptureStats, ConntrackEvent, FiveTuple, Journey, Packet

__all__ = [
    "EVENTS",
    "FORMAT_VERSION",
    "MANIFEST",
    "PCAP_DIR",
    "READABLE_VERSIONS",
    "TraceReader",
    "TraceWriter",
    "event_from_json",
    "event_to_json",
    "scenario_sha256",
    "step_event",
]

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CAPTURE_SUFFIXES = (".pcapng", ".pcap")     # the first present wins
MANIFEST = "manifest.json"
EVENTS = "events.jsonl"
PCAP_DIR = "pcap"


def event_to_json(ev: ConntrackEvent) -> dict[str, Any]:
    """A conntrack event as an events.jsonl object."""
    d = asdict(ev)
    d["original"] = asdict(ev.original)
    d["reply"] = asdict(ev.reply)
    d["status"] = list(ev.status)
    return {"type": "conntrack", **d}


def event_from_json(obj: Mapping[str, Any]) -> ConntrackEvent:
    """The inverse of :func:`event_to_json` (KeyError/TypeError/ValueError on bad input)."""
    return ConntrackEvent(
        ts=float(obj["ts"]), kind=str(obj["kind"]),
        original=FiveTuple(**obj["original"]), reply=FiveTuple(**obj["reply"]),
        state=str(obj.get("state", "")), timeout=obj.get("timeout"),
        status=tuple(obj.get("status", ())), ct_id=obj.get("ct_id"))


def step_event(name: str, phase: str, ts: float) -> dict[str, Any]:
    if phase not in ("begin", "end"):
        raise ValueError(f"step phase must be begin or end, not {phase!r}")
    return {"type": "step", "name": name, "phase": phase, "ts": ts}


def scenario_sha256(scenario: Mapping[str, Any]) -> str:
    """A stable digest of a scenario mapping (sorted keys, compact JSON)."""
    text = json.dumps(scenario, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class TraceWriter:
    """Creates a trace directory and writes its manifest and events."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        try:
            self.pcap_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TraceError(f"{self.dir}: cannot create trace directory: {exc}") from exc

    @property
    def pcap_dir(self) -> Path:
        return self.dir / PCAP_DIR

    def write_manifest(self, manifest: Mapping[str, Any]) -> Path:
        """Write manifest.json atomically; format_version is filled in, CaptureStats converted."""
        data = dict(manifest)
        data["format_version"] = FORMAT_VERSION
        if "scenario" in data and "scenario_sha256" not in data:
            data["scenario_sha256"] = scenario_sha256(data["scenario"])
        if "capture" in data:
            data["capture"] = [asdict(c) if isinstance(c, CaptureStats) else dict(c)
                               for c in data["capture"]]
        data.setdefault("complete", False)
        path = self.dir / MANIFEST
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, path)
        return path

    def convert_pcaps(self, interfaces: Mapping[str, Mapping[str, object]],
                      stats: Iterable[CaptureStats] = (), os_name: str = "") -> dict[str, int]:
        """After the capture stopped: each ``pcap/IFACE.pcap`` becomes ``IFACE.pcapng`` named
        and described from ``interfaces`` (the manifest's map); returns name -> records."""
        return convert_pcaps(self.pcap_dir, interfaces, stats, os_name)

    def append_event(self, event: Mapping[str, Any] | ConntrackEvent) -> None:
        self.append_events([event])

    def append_events(self, events: Iterable[Mapping[str, Any] | ConntrackEvent]) -> None:
        lines = []
        for ev in events:
            obj = event_to_json(ev) if isinstance(ev, ConntrackEvent) else dict(ev)
            if "type" not in obj:
                raise TraceError(f"{self.dir / EVENTS}: event without a 'type': {obj!r}")
            lines.append(json.dumps(obj, sort_keys=True, default=str) + "\n")
        with open(self.dir / EVENTS, "a", encoding="utf-8") as fh:
            fh.writelines(lines)


class TraceReader:
    """Reads a trace directory; every problem is a TraceError naming the file."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        path = self.dir / MANIFEST
        if not self.dir.is_dir():
            raise TraceError(f"{self.dir}: no such trace directory")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise TraceError(f"{path}: missing (not a trace directory?)") from exc
        except (OSError, ValueError) as exc:
            raise TraceError(f"{path}: unreadable: {exc}") from exc
        if not isinstance(manifest, dict):
            raise TraceError(f"{path}: not a JSON object")
        version = manifest.get("format_version")
        if version not in READABLE_VERSIONS:
            raise TraceError(f"{path}: unknown format_version {version!r} (this netsim reads "
                             f"{', '.join(map(str, READABLE_VERSIONS))})")
        self.manifest: dict[str, Any] = manifest
        self.decode_stats: list[DecodeStats] = []

    @property
    def interfaces(self) -> list[str]:
        """Captured interfaces: those in the manifest, else every pcap/*.pcap(ng) present."""
        named = list(self.manifest.get("interfaces") or {})
        if named:
            return named
        pdir = self.dir / PCAP_DIR
        if not pdir.is_dir():
            return []
        return sorted({p.stem for p in pdir.iterdir() if p.suffix in CAPTURE_SUFFIXES})

    def tie_order(self) -> list[str]:
        """Interfaces in path order by their manifest role (for journeys' equal timestamps)."""
        roles = ROLE_RANK
        info = self.manifest.get("interfaces") or {}
        return sorted(self.interfaces, key=lambda i: (
            roles.get(str((info.get(i) or {}).get("role", "")), len(roles)), i))

    @property
    def format_version(self) -> int:
        return int(self.manifest["format_version"])

    def pcap_path(self, iface: str) -> Path:
        """The capture file of ``iface``: ``pcap/IFACE.pcapng`` (version 2) or ``.pcap`` (1)."""
        base = self.dir / PCAP_DIR
        for suffix in CAPTURE_SUFFIXES:
            if (base / (iface + suffix)).exists():
                return base / (iface + suffix)
        want = ".pcap" if self.format_version < 2 else ".pcapng"
        raise TraceError(f"{base / (iface + want)}: missing capture for interface {iface}")

    def packets(self, ifaces: Iterable[str] | None = None,
                rename: Mapping[str, str] | None = None) -> list[Packet]:
        """Every IPv4 packet of the chosen (default: all) interfaces, in capture-time order.

        Equal times keep the order of ``ifaces`` (default: :meth:`tie_order`, path order).
        ``rename`` maps a captured interface's name to the name its packets should carry
        (e.g. the model's name for a veth an engine named).
        """
        out: list[Packet] = []
        self.decode_stats = []
        interned: dict[object, FiveTuple] = {}
        names = rename or {}
        with gc_paused():
            for iface in (list(ifaces) if ifaces is not None else self.tie_order()):
                pkts, stats = decode_pcap(self.pcap_path(iface), names.get(iface, iface), interned)
                out.extend(pkts)
                self.decode_stats.append(stats)
            # each file is (almost) in time order already: timsort merges the runs in O(n)
            out.sort(key=attrgetter("ts_ns"))
        return out

    def analyse(self, window_s: float = 1.0, rename: Mapping[str, str] | None = None
                ) -> tuple[list[Packet], list[Journey]]:
        """Every packet and every journey of the trace (pcap -> packets -> journeys).

        One pause of the cyclic collector spans both stages (see netsim.trace._gc).
        ``rename`` as for :meth:`packets`.
        """
        from netsim.trace.journeys import build_journeys
        names = rename or {}
        with gc_paused():
            packets = self.packets(rename=names)
            order = [names.get(i, i) for i in self.tie_order()]
            return packets, build_journeys(packets, window_s, tie_order=order)

    def events(self) -> list[dict[str, Any]]:
        path = self.dir / EVENTS
        if not path.exists():
            raise TraceError(f"{path}: missing")
        out = []
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise TraceError(f"{path}:{n}: not JSON: {exc}") from exc
                if not isinstance(obj, dict) or "type" not in obj:
                    raise TraceError(f"{path}:{n}: not an event object with a 'type'")
                out.append(obj)
        return out

    def conntrack_events(self) -> list[ConntrackEvent]:
        path = self.dir / EVENTS
        out = []
        for n, obj in enumerate(self.events(), 1):
            if obj["type"] != "conntrack":
                continue
            try:
                out.append(event_from_json(obj))
            except (KeyError, TypeError, ValueError) as exc:
                raise TraceError(f"{path}: event {n}: bad conntrack event: {exc}") from exc
        return out

    def steps(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["type"] == "step"]

    def capture_stats(self) -> list[CaptureStats]:
        try:
            return [CaptureStats(**c) for c in self.manifest.get("capture", [])]
        except TypeError as exc:
            raise TraceError(f"{self.dir / MANIFEST}: bad capture entry: {exc}") from exc

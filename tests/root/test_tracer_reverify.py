"""A trace re-verified offline gives exactly the live run's verdict — check by check — for a
passing run and for a run with a wrong expectation; and the live run's trace directory holds
what the README promises (lifecycle and step events, NAT cross-check, drop counts)."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from netsim.experiment import verify_trace
from netsim.trace.pcapng import describe_interface, read_interfaces

ROOT = Path(__file__).resolve().parents[2]
NAPT = ROOT / "scenarios" / "napt-basic.yaml"
pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (builds a lab)")]


def _netsim(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netsim.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, stdin=subprocess.DEVNULL)


def _live(tmp: Path, scenario: Path, tag: str) -> tuple[int, dict[str, Any], Path]:
    trace = tmp / f"trace-{tag}"
    p = _netsim("run", str(scenario), "--trace-dir", str(trace),
                "--name", f"trv{tag}{secrets.token_hex(2)}", "--json")
    assert p.returncode in (0, 1), p.stdout[-3000:] + p.stderr[-3000:]
    return p.returncode, json.loads(p.stdout), trace


def _same_verdict(code: int, live: dict[str, Any], trace: Path) -> None:
    report, _ = verify_trace(trace)
    offline = report.to_json()
    for key in ("scenario", "ok", "complete", "problems", "checks"):
        assert offline[key] == live[key], key
    p = _netsim("verify", str(trace))
    assert p.returncode == code, p.stdout[-3000:]
    assert ("PASS" if code == 0 else "FAIL") in p.stdout


def test_passing_run_reverifies_identically(tmp_path: Path) -> None:
    code, live, trace = _live(tmp_path, NAPT, "ok")
    assert code == 0 and live["ok"] and live["complete"], live
    _same_verdict(code, live, trace)
    events = [json.loads(x) for x in (trace / "events.jsonl").read_text().splitlines()]
    kinds = [(e["type"], e.get("phase")) for e in events]
    assert kinds[0] == ("lifecycle", "up") and kinds[-1] == ("lifecycle", "down")
    assert ("step", "begin") in kinds and ("conntrack", None) in kinds
    m = json.loads((trace / "manifest.json").read_text())
    assert m["complete"] and m["conntrack_overflows"] == 0
    assert all(c["kernel_drops"] == 0 and c["not_written"] == 0 for c in m["capture"])
    assert not any("NAT table" in p for p in live["problems"])   # packets and conntrack agree
    # each container's start (pid, address, interface) after the lab came up, its stop at teardown
    ctrs = [e for e in events if e["type"] == "lifecycle" and e.get("what") == "container"]
    starts = {e["name"]: e for e in ctrs if e["phase"] == "start"}
    stops = {e["name"]: e for e in ctrs if e["phase"] == "stop"}
    assert starts and starts.keys() == stops.keys()
    for name, ev in starts.items():
        assert isinstance(ev["pid"], int) and ev["pid"] > 1 and ev["address"].startswith("172.17.")
        assert ev["interface"] in m["interfaces"] and m["interfaces"][ev["interface"]]["container"] == name
        assert stops[name]["pid"] == ev["pid"] and stops[name]["exited"] is True
        assert stops[name]["ts"] > ev["ts"]
    # one pcapng per interface, named and described in its IDB (format version 2)
    assert m["format_version"] == 2 and not list((trace / "pcap").glob("*.pcap"))
    for iface, info in m["interfaces"].items():
        [idb] = read_interfaces(trace / "pcap" / f"{iface}.pcapng")
        assert (idb.name, idb.description, idb.tsresol) == (iface, describe_interface(info), 9)


def test_failing_run_reverifies_identically(tmp_path: Path) -> None:
    wrong = tmp_path / "napt-wrong.yaml"
    wrong.write_text(NAPT.read_text().replace("dnat: web:80 ", "dnat: web:81 "))
    code, live, trace = _live(tmp_path, wrong, "bad")
    assert code == 1 and not live["ok"] and live["complete"]
    assert [c["what"] for c in live["checks"] if not c["ok"]] == ["dnat"]
    _same_verdict(code, live, trace)

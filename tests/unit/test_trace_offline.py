"""A saved trace read offline: drops and conntrack overflows make it incomplete (and the verdict
says so), the two NAT tables are cross-checked, `netsim trace show|journeys` and the analysis
bench work on the committed real traces.  No root."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netsim.cli.main import app
from netsim.experiment import NAT_DISAGREEMENT, load_observation, verify_trace
from netsim.trace.bench import analysis_rate
from netsim.trace.journeys import build_journeys
from netsim.trace.records import Hop, Journey
from netsim.trace.store import TraceReader

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NAPT_BASIC = FIXTURES / "trace_napt_basic"      # read only (shared with test_verify.py)
NAPT = FIXTURES / "trace_napt"
runner = CliRunner()


def _copy(tmp_path: Path, src: Path = NAPT_BASIC, **manifest: object) -> Path:
    d = tmp_path / "trace"
    shutil.copytree(src, d)
    m = json.loads((d / "manifest.json").read_text())
    m.update(manifest)
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def test_conntrack_overflow_makes_the_trace_incomplete_and_the_verdict_fail(tmp_path: Path) -> None:
    d = _copy(tmp_path, conntrack_overflows=2, complete=True)   # even if "complete" was left on
    obs = load_observation(d)
    assert not obs.complete
    assert any("overflowed 2 time(s) (ENOBUFS)" in p for p in obs.problems)
    report, _ = verify_trace(d)
    assert not report.ok and not report.complete
    assert all(c.ok for c in report.checks)      # every check holds; the trace is what fails
    res = runner.invoke(app, ["verify", str(d)])
    assert res.exit_code == 1
    assert "trace INCOMPLETE" in res.output and "ENOBUFS" in res.output


@pytest.mark.parametrize("field,text", [("kernel_drops", "dropped 3 packets"),
                                        ("not_written", "3 packets seen by the kernel were never written")])
def test_capture_loss_makes_the_trace_incomplete(tmp_path: Path, field: str, text: str) -> None:
    m = json.loads((NAPT_BASIC / "manifest.json").read_text())
    m["capture"][0][field] = 3
    d = _copy(tmp_path, capture=m["capture"])
    obs = load_observation(d)
    assert not obs.complete and any(text in p for p in obs.problems), obs.problems
    assert not verify_trace(d)[0].ok


def test_complete_trace_reverifies_and_nat_tables_agree() -> None:
    obs = load_observation(NAPT_BASIC)
    assert obs.complete and not obs.problems
    report, _ = verify_trace(NAPT_BASIC)
    assert report.ok


def test_nat_disagreement_is_reported(tmp_path: Path) -> None:
    """Drop conntrack's record of the outsider's DNAT: the packets still show it."""
    d = _copy(tmp_path)
    lines = (d / "events.jsonl").read_text().splitlines()
    kept = [ln for ln in lines if not (json.loads(ln)["type"] == "conntrack"
                                       and json.loads(ln)["original"]["dport"] == 8080)]
    assert len(kept) < len(lines)
    (d / "events.jsonl").write_text("\n".join(kept) + "\n")
    obs = load_observation(d)
    nat = [p for p in obs.problems if p.startswith(NAT_DISAGREEMENT)]
    assert nat and all("in packets, not in conntrack" in p for p in nat), nat
    assert any("dnat tcp inside 172.17.0.2:80 outside 203.0.113.2:8080" in p for p in nat)
    res = runner.invoke(app, ["trace", "show", str(d), "--no-transitions"])
    assert res.exit_code == 0, res.output
    assert "NAT tables disagree" in res.output and "in packets, not in conntrack" in res.output
    # the verdict (netsim run and netsim verify print it) lists each disagreement
    res = runner.invoke(app, ["verify", str(d)])
    assert "NAT table: packets and conntrack DISAGREE (1)" in res.output, res.output
    assert ("≠ dnat tcp inside 172.17.0.2:80 outside 203.0.113.2:8080 remote "
            "198.51.100.20:41000: in packets, not in conntrack") in res.output, res.output


def test_trace_show(tmp_path: Path) -> None:
    res = runner.invoke(app, ["trace", "show", str(NAPT)])
    assert res.exit_code == 0, res.output
    for text in ("interfaces", "flows (4)", "NAT table from packets", "NAT table from conntrack",
                 "NAT tables agree: 4 rows from packets, 4 from conntrack",
                 "drops: capture 0, conntrack overflows 0", "trace complete"):
        assert text in res.output, text
    res = runner.invoke(app, ["trace", "show", str(_copy(tmp_path, conntrack_overflows=1))])
    assert res.exit_code == 0 and "INCOMPLETE" in res.output


def test_trace_journeys_filter_and_changes() -> None:
    res = runner.invoke(app, ["trace", "journeys", str(NAPT), "--flow", "udp 172.17.0.2:40000"])
    assert res.exit_code == 0, res.output
    assert "2 of 2 matching journeys shown" in res.output
    assert "src 172.17.0.2→203.0.113.2, ttl 64→63" in res.output       # outbound, at eth0
    assert "dst 203.0.113.2→172.17.0.2, ttl 63→62" in res.output       # the reply, at docker0
    res = runner.invoke(app, ["trace", "journeys", str(NAPT), "--nat", "--limit", "1"])
    assert res.exit_code == 0 and "1 of 24 matching journeys shown" in res.output, res.output
    res = runner.invoke(app, ["trace", "journeys", str(NAPT), "--flow", "bogus"])
    assert res.exit_code == 2


def test_journeys_do_not_depend_on_input_order() -> None:
    reader = TraceReader(NAPT)
    packets, journeys = reader.analyse()
    shuffled = packets[:]
    random.Random(5).shuffle(shuffled)
    again = build_journeys(shuffled, tie_order=reader.tie_order())
    assert [j.packets for j in again] == [j.packets for j in journeys]
    assert again == journeys


def test_hops_are_built_lazily_and_compare_by_value() -> None:
    _, journeys = TraceReader(NAPT).analyse()
    j = next(j for j in journeys if len(j.packets) == 3 and j.first.tuple.proto == "udp")
    assert j._hops is None                       # not built until asked for
    hops = j.hops
    assert hops[0].changed == {} and hops[2].changed["src"][1] == "203.0.113.2"
    explicit = Journey(j.id, hops=tuple(Hop(h.packet, dict(h.changed)) for h in hops))
    assert explicit == j and explicit.packets == j.packets
    assert j.first._replace(iface="x").iface == "x" and j.first.iface != "x"


def test_analysis_rate_on_a_saved_trace() -> None:
    r = analysis_rate(NAPT, runs=1, anchors=False)
    assert r.packets == 72 and r.journeys == 24 and r.packets_per_s > 0

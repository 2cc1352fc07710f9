"""verify on a real trace of napt-basic (captured by `netsim run`, committed as a fixture):
prediction vs observation, offline and without root."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from netsim.errors import TraceError
from netsim.experiment import load_observation, verify_trace
from netsim.model import predict
from netsim.scenario import parse_scenario
from netsim.verify import verify

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "trace_napt_basic"


def _copy_with_scenario(tmp_path: Path, edit: tuple[str, str]) -> Path:
    d = tmp_path / "trace"
    shutil.copytree(FIXTURE, d)
    m = json.loads((d / "manifest.json").read_text())
    assert edit[0] in m["scenario"]["text"]
    m["scenario"]["text"] = m["scenario"]["text"].replace(*edit)
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def test_fixture_trace_verifies() -> None:
    report, prediction = verify_trace(FIXTURE)
    assert report.complete and report.ok, [c for c in report.checks if not c.ok]
    kinds = {(c.step, c.kind, c.what) for c in report.checks}
    assert ("client-fetch", "expect", "snat") in kinds
    assert ("outsider-fetch", "model", "conntrack") in kinds
    # the SNAT is seen on the wire: inside address on docker0, the NIC address on eth0, same port
    snat = next(c for c in report.checks if c.what == "snat")
    assert snat.observed.startswith("203.0.113.2:")
    hop_veth = next(c for c in report.checks if c.step == "client-fetch" and c.what.startswith("hop veth")
                    and "forward" in c.what)
    assert hop_veth.observed.startswith("tcp 172.17.0.3:")
    assert hop_veth.observed.split(":")[1].split()[0] == snat.observed.split(":")[1]


def test_a_wrong_expectation_fails_and_only_it(tmp_path: Path) -> None:
    d = _copy_with_scenario(tmp_path, ("dnat: web:80", "dnat: web:81"))
    report, _ = verify_trace(d)
    assert not report.ok
    assert [(c.step, c.what, c.expected, c.observed) for c in report.failed] == [
        ("outsider-fetch", "dnat", "172.17.0.2:81", "172.17.0.2:80")]


def test_a_wrong_model_is_caught_by_the_hop_checks(tmp_path: Path) -> None:
    # a model that believes there is no MASQUERADE disagrees with what the kernel did
    d = _copy_with_scenario(tmp_path, ("name: napt-basic\n", "name: napt-basic\nhost: {masquerade: false}\n"))
    report, _ = verify_trace(d)
    bad = {(c.step, c.what) for c in report.failed}
    assert ("client-fetch", "hop eth0 (forward)") in bad
    assert ("client-fetch", "conntrack") in bad
    assert all(step == "client-fetch" for step, _ in bad)


def test_drops_make_the_trace_incomplete_and_the_run_fail(tmp_path: Path) -> None:
    d = tmp_path / "trace"
    shutil.copytree(FIXTURE, d)
    m = json.loads((d / "manifest.json").read_text())
    m["capture"][0]["kernel_drops"] = 3
    m["complete"] = False
    (d / "manifest.json").write_text(json.dumps(m))
    report, _ = verify_trace(d)
    assert not report.complete and not report.ok
    assert any("dropped 3 packets" in p for p in load_observation(d).problems)


def test_missing_trace_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError):
        verify_trace(tmp_path / "nope")


def test_verify_is_pure_and_matches_predicted_hops() -> None:
    m = json.loads((FIXTURE / "manifest.json").read_text())
    s = parse_scenario(m["scenario"]["text"]).scenario
    obs = load_observation(FIXTURE)
    report = verify(s, predict(s), obs)
    model_checks = [c for c in report.checks if c.kind == "model"]
    assert len(model_checks) == 16 and all(c.ok for c in model_checks)

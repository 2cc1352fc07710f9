"""napt-basic end to end: real lab, real packets; a wrong expectation fails and says which."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAPT = ROOT / "scenarios" / "napt-basic.yaml"
pytestmark = pytest.mark.root


def _netsim(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netsim.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def napt_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    trace = tmp_path_factory.mktemp("trace") / "napt"
    return _netsim("run", str(NAPT), "--trace-dir", str(trace), "--name", "t-napt", "--json"), trace


def test_napt_basic_passes(napt_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    p, trace = napt_run
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads(p.stdout)
    assert report["ok"] and report["complete"]
    checks = {(c["step"], c["kind"], c["what"]): c for c in report["checks"]}
    snat = checks[("client-fetch", "expect", "snat")]
    assert snat["observed"].startswith("203.0.113.2:") and snat["observed"] == snat["predicted"]
    # masqueraded with the port kept: the container's ephemeral port is the one seen outside
    veth_hop = next(c for (step, kind, what), c in checks.items()
                    if step == "client-fetch" and what.startswith("hop veth") and "forward" in what)
    assert veth_hop["observed"].startswith("tcp 172.17.0.3:")
    assert veth_hop["observed"].split()[1].split(":")[1] == snat["observed"].split(":")[1]
    sees = checks[("outsider-fetch", "expect", "server_sees")]
    assert sees["observed"] == "198.51.100.20:41000"
    assert checks[("outsider-fetch", "expect", "dnat")]["observed"] == "172.17.0.2:80"
    assert checks[("client-fetch", "model", "conntrack")]["ok"]
    # the trace directory is complete and readable
    manifest = json.loads((trace / "manifest.json").read_text())
    assert manifest["complete"] and manifest["format_version"] == 2
    assert {c["iface"] for c in manifest["capture"]} >= {"docker0", "eth0"}
    assert all(c["kernel_drops"] == 0 for c in manifest["capture"])


def test_saved_trace_reverifies_offline_with_the_same_verdict(
        napt_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, trace = napt_run
    p = _netsim("verify", str(trace))
    assert p.returncode == 0, p.stdout[-2000:]
    assert "PASS" in p.stdout


def test_wrong_expectation_exits_1_and_names_it(tmp_path: Path) -> None:
    wrong = tmp_path / "napt-wrong.yaml"
    wrong.write_text(NAPT.read_text().replace("dnat: web:80 ", "dnat: web:81 "))
    p = _netsim("run", str(wrong), "--trace-dir", str(tmp_path / "trace"), "--name", "t-wrong")
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-2000:]
    fail_lines = [ln for ln in p.stdout.splitlines() if "✗" in ln]
    assert any("outsider-fetch: dnat: expected 172.17.0.2:81, observed 172.17.0.2:80" in ln
               for ln in fail_lines), p.stdout[-3000:]
    assert len(fail_lines) == 1, fail_lines

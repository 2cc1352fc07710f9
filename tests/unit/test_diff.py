"""netsim diff on real traces (captured by `netsim run`, committed as fixtures), without root.

Fixtures (tests/fixtures/diff_*), all captured on the same machine:
  diff_napt_own             napt-basic, own engine
  diff_napt_docker          napt-basic, docker engine (dockerd 20.10, --userland-proxy=false)
  diff_napt_docker_proxy    napt-basic, docker engine with the userland proxy on
  diff_hairpin_own          regression/hairpin, own engine
  diff_hairpin_docker_proxy regression/hairpin, docker engine with the userland proxy on
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netsim.diff import diff_traces, fixed_ports, view_of
from netsim.errors import TraceError

FIX = Path(__file__).resolve().parents[1] / "fixtures"
ROOT = FIX.parents[1]
NAPT_OWN, NAPT_DOCKER, NAPT_PROXY = FIX / "diff_napt_own", FIX / "diff_napt_docker", FIX / "diff_napt_docker_proxy"
HAIRPIN_OWN, HAIRPIN_PROXY = FIX / "diff_hairpin_own", FIX / "diff_hairpin_docker_proxy"


def _netsim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netsim.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL)


def test_own_and_docker_traces_of_napt_basic_agree() -> None:
    r = diff_traces(NAPT_OWN, NAPT_DOCKER)
    assert r.same, "\n".join(map(str, r.differences))
    assert (r.a.engine, r.b.engine) == ("own", "docker")
    # what was normalised really differed: kernel veth names and the client's ephemeral port
    ma = json.loads((NAPT_OWN / "manifest.json").read_text())["interfaces"]
    mb = json.loads((NAPT_DOCKER / "manifest.json").read_text())["interfaces"]
    assert set(ma) != set(mb) and {v["model_name"] for v in ma.values()} == {v["model_name"] for v in mb.values()}
    assert set(r.a.ports["client-fetch"]) != set(r.b.ports["client-fetch"])
    assert list(r.a.ports["client-fetch"].values()) == list(r.b.ports["client-fetch"].values()) == ["*1"]
    # and the NAT behaviour is really in the comparison: SNAT with the port kept, DNAT to web:80
    assert r.a.conntrack["client-fetch"] == {
        "tcp 172.17.0.3:*1 -> 198.51.100.10:80": (
            "NEW reply tcp 198.51.100.10:80 -> 203.0.113.2:*1", "established", "in the final table")}
    assert r.a.conntrack["outsider-fetch"] == {
        "tcp 198.51.100.20:41000 -> 203.0.113.2:8080": (
            "NEW reply tcp 172.17.0.2:80 -> 198.51.100.20:41000", "established", "in the final table")}
    assert "eth0 tcp 203.0.113.2:*1 -> 198.51.100.10:80" in r.a.hops["client-fetch"]
    assert "vethca84d13 tcp 198.51.100.20:41000 -> 172.17.0.2:80" in r.b.hops["outsider-fetch"]
    assert r.a.results["client-fetch"] == "reply=true seen_as=203.0.113.2:*1"


def test_userland_proxy_does_not_touch_traffic_from_outside() -> None:
    # Finding: with docker-proxy listening on :8080, a connection arriving on the NIC is still
    # DNATed in PREROUTING by the kernel; the proxy never sees it.
    r = diff_traces(NAPT_OWN, NAPT_PROXY)
    assert r.same, "\n".join(map(str, r.differences))


def test_userland_proxy_relays_hairpin_and_loopback_instead_of_nat() -> None:
    # Finding: with the userland proxy on, a container reaching a published port on the host
    # (and the host reaching 127.0.0.1:PORT) is relayed by docker-proxy: the first connection
    # ends at the host (not DNATed), a second one from the gateway with a new port reaches web.
    r = diff_traces(HAIRPIN_OWN, HAIRPIN_PROXY)
    assert not r.same
    by = {(d.step, d.what, d.key): d for d in r.differences}
    peer = by[("hairpin-peer", "conntrack", "tcp 172.17.0.3:*1 -> 203.0.113.2:8080")]
    assert peer.a.startswith("NEW reply tcp 172.17.0.2:80 -> 172.17.0.3:*1")       # kernel DNAT
    assert peer.b.startswith("NEW reply tcp 203.0.113.2:8080 -> 172.17.0.3:*1")    # not NATed
    relay = by[("hairpin-peer", "conntrack", "tcp 172.17.0.1:*2 -> 172.17.0.2:80")]
    assert relay.a == "" and relay.b.startswith("NEW reply tcp 172.17.0.2:80 -> 172.17.0.1:*2")
    loop = by[("host-loopback", "conntrack", "tcp 127.0.0.1:42000 -> 127.0.0.1:8080")]
    assert "172.17.0.2:80 -> 172.17.0.1:42000" in loop.a and "127.0.0.1:8080 -> 127.0.0.1:42000" in loop.b
    assert {d.step for d in r.differences} == {"hairpin-self", "hairpin-peer", "host-loopback"}


def test_a_trace_agrees_with_itself_and_another_run() -> None:
    assert diff_traces(NAPT_DOCKER, NAPT_DOCKER).same
    assert diff_traces(NAPT_DOCKER, NAPT_PROXY).same


def _edit_events(src: Path, dst: Path, old: str, new: str) -> Path:
    shutil.copytree(src, dst)
    text = (dst / "events.jsonl").read_text()
    assert old in text
    (dst / "events.jsonl").write_text(text.replace(old, new))
    return dst


def test_a_remapped_port_is_a_difference(tmp_path: Path) -> None:
    # the same trace, but conntrack says the NAT moved the client to another outside port
    own = view_of(NAPT_OWN)
    port = next(iter(own.ports["client-fetch"]))
    edited = _edit_events(NAPT_OWN, tmp_path / "t", f'"dport": {port}, "dst": "203.0.113.2"',
                          '"dport": 1025, "dst": "203.0.113.2"')
    r = diff_traces(NAPT_OWN, edited)
    assert [(d.step, d.what) for d in r.differences] == [("client-fetch", "conntrack")]
    d = r.differences[0]
    # kept port: the same symbol inside and outside; remapped: a new one
    assert "203.0.113.2:*1" in d.a and "203.0.113.2:*2" in d.b


def test_fixed_ports_come_from_the_scenario() -> None:
    text = json.loads((NAPT_OWN / "manifest.json").read_text())["scenario"]["text"]
    assert fixed_ports(text) == {80, 8080, 41000}
    assert fixed_ports(None) is None and fixed_ports("name: [") is None


def test_cli_exit_codes(tmp_path: Path) -> None:
    p = _netsim("diff", str(NAPT_OWN), str(NAPT_DOCKER))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "no difference" in p.stdout
    p = _netsim("diff", str(HAIRPIN_OWN), str(HAIRPIN_PROXY))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "difference(s)" in p.stdout and "hairpin-peer: conntrack:" in p.stdout
    p = _netsim("diff", "--json", str(NAPT_OWN), str(NAPT_PROXY))
    assert p.returncode == 0 and json.loads(p.stdout)["same"] is True
    p = _netsim("diff", str(NAPT_OWN), str(tmp_path / "missing"))
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "no such trace directory" in p.stderr


def test_not_a_trace_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError):
        view_of(tmp_path)

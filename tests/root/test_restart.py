"""stop / start / restart of a running lab's containers through the real CLI, as Docker does
them: a stopped container's address goes back to the pool, a container started first takes it,
and the one started after gets a new address — seen from inside the containers, in the MAC the
address implies, and in the published port that follows its container (real HTTP through the
DNAT rule).  Checked against Docker 20.10 itself (same sequence, same addresses)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds a lab"),
]

NETSIM = [sys.executable, "-m", "netsim.cli"]
SCENARIO = """\
name: restart
containers:
  - name: web
    command: [httpd, -f, -p, "80", -h, /www]
    files: {/www/index.html: "served-by-web\\n"}
    publish: ["8080:80"]
    ready_port: 80
  - name: b
    command: [sleep, "3600"]
  - name: c
    command: [sleep, "3600"]
"""


def netsim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NETSIM, *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[2])


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[str]:
    name = f"rs{uuid.uuid4().hex[:6]}"
    scenario = tmp_path / "restart.yaml"
    scenario.write_text(SCENARIO)
    r = netsim("up", str(scenario), "--name", name)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        yield name
    finally:
        netsim("down", name)


def eth0(lab: str, container: str) -> tuple[str, str]:
    """(address/prefix, MAC) of eth0, read inside the container."""
    r = netsim("exec", lab, container, "--", "ip", "-o", "addr", "show", "eth0")
    assert r.returncode == 0, r.stderr
    addr = r.stdout.split(" inet ")[1].split()[0]
    mac = netsim("exec", lab, container, "--", "cat", "/sys/class/net/eth0/address").stdout.strip()
    return addr, mac


def fetch_published(lab: str, tries: int = 1) -> subprocess.CompletedProcess[str]:
    """http://NIC:8080/ from the lab's host namespace: through nat OUTPUT's DNAT to web (a few
    tries for a web that has just been started and may not listen yet)."""
    for _ in range(tries):
        r = subprocess.run(["nsenter", f"--net=/run/netns/netsim-{lab}-host", "busybox", "wget", "-q", "-O-",
                            "http://203.0.113.2:8080/"], capture_output=True, text=True, timeout=20)
        if r.returncode == 0:
            break
        time.sleep(0.2)
    return r


def host_ns(lab: str, *argv: str) -> str:
    return subprocess.run(["nsenter", f"--net=/run/netns/netsim-{lab}-host", *argv], capture_output=True,
                          text=True, timeout=20, check=True).stdout


def test_restart_reallocates_addresses_like_docker(lab: str) -> None:
    assert eth0(lab, "web") == ("172.17.0.2/16", "02:42:ac:11:00:02")
    assert eth0(lab, "b")[0] == "172.17.0.3/16"
    assert fetch_published(lab).stdout == "served-by-web\n"

    for who in ("web", "b"):
        r = netsim("stop", lab, who, "--time", "1")
        assert r.returncode == 0 and "addresses are released" in r.stdout, r.stdout + r.stderr
    assert not Path(f"/run/netns/netsim-{lab}-c-web").exists()      # its endpoint is gone
    assert "172.17.0.2" not in host_ns(lab, "iptables-save", "-t", "nat")   # and its DNAT rule
    assert fetch_published(lab).returncode != 0
    ps = [lab_ for lab_ in json.loads(netsim("ps", "--json").stdout) if lab_["name"] == lab][0]
    assert {r["name"]: r["addresses"] for r in ps["containers"]}["web"] == {}     # holds none
    assert netsim("exec", lab, "web", "--", "true").returncode != 0  # stopped

    r = netsim("start", lab, "b")       # b first: it takes web's old address
    assert r.returncode == 0 and "172.17.0.2 on bridge (was 172.17.0.3)" in r.stdout, r.stdout + r.stderr
    assert eth0(lab, "b") == ("172.17.0.2/16", "02:42:ac:11:00:02")
    r = netsim("start", lab, "web")     # web: the lowest free one now (c still holds .4)
    assert r.returncode == 0 and "172.17.0.3 on bridge (was 172.17.0.2)" in r.stdout, r.stdout + r.stderr
    assert eth0(lab, "web") == ("172.17.0.3/16", "02:42:ac:11:00:03")
    rows = {r["name"]: r for lab_ in json.loads(netsim("ps", "--json").stdout) if lab_["name"] == lab
            for r in lab_["containers"]}
    assert {n: r["addresses"] for n, r in rows.items()} == {
        "web": {"bridge": "172.17.0.3"}, "b": {"bridge": "172.17.0.2"}, "c": {"bridge": "172.17.0.4"}}
    # the published port follows web to its new address, and web serves its files again
    assert "--to-destination 172.17.0.3:80" in host_ns(lab, "iptables-save", "-t", "nat")
    assert fetch_published(lab, tries=25).stdout == "served-by-web\n"
    # the new host-side port is on docker0 with the scenario's hairpin mode (Docker's default: on)
    veths = [ln.split(":")[1].strip().split("@")[0] for ln in host_ns(lab, "ip", "-o", "link", "show",
                                                                      "master", "docker0").splitlines()]
    assert len(veths) == 3
    assert all("hairpin on" in host_ns(lab, "ip", "-d", "link", "show", v) for v in veths)  # nsenter: /sys is not its

    # restart keeps an address that nobody took; a running container cannot be started twice
    r = netsim("restart", lab, "c", "--time", "1")
    assert r.returncode == 0 and "172.17.0.4 on bridge" in r.stdout and "was" not in r.stdout, r.stdout + r.stderr
    r = netsim("start", lab, "c")
    assert r.returncode == 2 and "is running" in r.stderr
    r = netsim("restart", lab, "nope")
    assert r.returncode == 2 and "no container 'nope'" in r.stderr

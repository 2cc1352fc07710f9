"""`netsim netem` on a lab kept by `netsim up`: impair a link, change it, clear it — and delay
with jitter, measured on real TCP handshakes through the impaired uplink."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.root


def _netsim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netsim.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def _in_host(lab: str, *argv: str) -> str:
    return subprocess.run(["nsenter", f"--net=/run/netns/netsim-{lab}-host", *argv], capture_output=True,
                          text=True, timeout=10, check=True).stdout


def _handshakes(lab: str, n: int = 7) -> list[float]:
    """Seconds per TCP connect from the lab's host to the external server (198.51.100.10:80)."""
    code = (f"import socket,time\nfor _ in range({n}):\n s=socket.socket(); t=time.monotonic()\n"
            " s.connect(('198.51.100.10',80)); print(time.monotonic()-t); s.close()\n")
    return [float(x) for x in _in_host(lab, sys.executable, "-c", code).split()]


def test_netem_changes_a_running_labs_link() -> None:
    lab = f"t-netem-{os.getpid() % 100000}"
    up = _netsim("up", "scenarios/napt-basic.yaml", "--name", lab)
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    try:
        p = _netsim("netem", lab, "nic", "--rate", "10mbit", "--loss", "5")
        assert p.returncode == 0, p.stderr
        assert "tbf" in _in_host(lab, "tc", "qdisc", "show", "dev", "eth0")
        assert f"netsim:{lab}:loss" in _in_host(lab, "iptables", "-t", "raw", "-S")
        bad = _netsim("netem", lab, "nowhere", "--rate", "1mbit")
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "unknown link" in bad.stderr
        assert _netsim("netem", lab, "nic", "--rate", "fast").returncode == 2
        # delay and jitter, each way: a TCP handshake to an external host through the NIC takes
        # one round trip, 2 x (40 ms +- 5 ms) here, against well under a millisecond without
        p = _netsim("netem", lab, "nic", "--delay", "40ms", "--jitter", "5ms")
        assert p.returncode == 0, p.stderr
        assert "tbf" not in _in_host(lab, "tc", "qdisc", "show", "dev", "eth0")     # replaced
        rtts = _handshakes(lab)
        assert min(rtts) >= 0.070 and statistics.median(rtts) < 0.150, rtts
        assert max(rtts) - min(rtts) > 0.002, rtts       # jitter: not all alike
        if "netfilter-queue delayer" in p.stdout:         # no sch_netem: the delayer is a lab process
            assert f"netsim:{lab}:delay" in _in_host(lab, "iptables", "-t", "mangle", "-S")
            pid = json.loads(Path(f"/run/netsim/labs/{lab}/impair/nic.delayq.json").read_text())["pid"]
            assert Path(f"/proc/{pid}").exists()
        p = _netsim("netem", lab, "nic", "--clear")
        assert p.returncode == 0, p.stderr
        assert "tbf" not in _in_host(lab, "tc", "qdisc", "show", "dev", "eth0")
        assert f"netsim:{lab}:loss" not in _in_host(lab, "iptables", "-t", "raw", "-S")
        assert f"netsim:{lab}:delay" not in _in_host(lab, "iptables", "-t", "mangle", "-S")
        assert max(_handshakes(lab)) < 0.030                   # undelayed again
        assert not Path(f"/run/netsim/labs/{lab}/impair/nic.delayq.json").exists()
    finally:
        down = _netsim("down", lab)
        assert down.returncode == 0, down.stderr
    assert not Path(f"/run/netns/netsim-{lab}-host").exists()

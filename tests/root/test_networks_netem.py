"""`netsim netem` on a lab kept by `netsim up`: impair a link, change it, clear it."""
from __future__ import annotations

import os
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
        p = _netsim("netem", lab, "nic", "--clear")
        assert p.returncode == 0, p.stderr
        assert "tbf" not in _in_host(lab, "tc", "qdisc", "show", "dev", "eth0")
        assert f"netsim:{lab}:loss" not in _in_host(lab, "iptables", "-t", "raw", "-S")
    finally:
        down = _netsim("down", lab)
        assert down.returncode == 0, down.stderr
    assert not Path(f"/run/netns/netsim-{lab}-host").exists()

"""The lab lifecycle through the real CLI, each command its own process: `netsim up` leaves a lab
running, and `ps`, `exec`, `logs`, `stats` and `down` find it through /run/netsim."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.state import proc_alive

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds a lab"),
]

NETSIM = [sys.executable, "-m", "netsim.cli"]
SCENARIO = """\
name: lifecycle
containers:
  - name: web
    command: [sh, -c, "echo hello-out; echo hello-err >&2; exec sleep 3600"]
    limits: {memory: 64m, pids: 64}
  - name: hog
    command: [dd, if=/dev/zero, of=/dev/null, bs=96M, count=1]
    limits: {memory: 32m}
"""


def netsim(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NETSIM, *args], capture_output=True, text=True, timeout=60, input=input,
                          cwd=Path(__file__).resolve().parents[2])  # fmt: skip


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    name = f"lc{uuid.uuid4().hex[:6]}"
    scenario = tmp_path / "lifecycle.yaml"
    scenario.write_text(SCENARIO)
    yield name, scenario
    if Path(f"/run/netsim/labs/{name}").exists():
        netsim("down", name)


def test_up_ps_exec_logs_stats_down(lab: tuple[str, Path]) -> None:
    name, scenario = lab
    r = netsim("up", str(scenario), "--name", name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"lab {name}: up" in r.stdout

    # exec: output, exit code, stdin, user namespace mapping shown from inside
    r = netsim("exec", name, "web", "--", "sh", "-c", "hostname; cat /proc/self/uid_map; id -u; exit 3")
    assert r.returncode == 3, r.stderr
    host, uid_map, uid = r.stdout.splitlines()
    assert host == "web" and uid_map.split() == ["0", "100000", "65536"] and uid == "0"
    r = netsim("exec", name, "web", "--", "cat", input="via-stdin\n")
    assert r.returncode == 0 and r.stdout == "via-stdin\n"
    assert netsim("exec", name, "web", "--", "no-such-program").returncode == 127

    r = netsim("logs", name, "web")
    assert r.returncode == 0 and r.stdout == "hello-out\n" and r.stderr == "hello-err\n"

    rows = {row["name"]: row for row in json.loads(netsim("stats", name, "--json").stdout)}
    assert rows["web"]["status"] == "running" and rows["web"]["pids"] == 2
    assert rows["web"]["memory_bytes"] > 0 and rows["web"]["cpu_usage_ns"] > 0
    assert rows["hog"]["status"] == "exited" and rows["hog"]["oom_killed"] is True
    assert "OOM-killed" in netsim("stats", name).stdout

    labs = {x["name"]: x for x in json.loads(netsim("ps", "--json").stdout)}
    assert labs[name]["state"] == "up"
    cts = {c["name"]: c for c in labs[name]["containers"]}
    assert cts["hog"]["oom_killed"] is True and cts["hog"]["exit_code"] == 137
    assert cts["web"]["oom_killed"] is False and cts["web"]["status"] == "running"
    table = netsim("ps").stdout
    assert name in table and "OOM-killed" in table

    pid = cts["web"]["pid"]
    r = netsim("down", name)
    assert r.returncode == 0, r.stderr
    assert not proc_alive(pid, None)  # gone (or a zombie its new parent has yet to reap)
    assert not Path(f"/run/netsim/labs/{name}").exists()


def test_bad_names_exit_2_with_one_line(lab: tuple[str, Path]) -> None:
    name, _ = lab
    for args in (("exec", name, "web", "--", "true"), ("logs", name, "web"), ("stats", name), ("down", name)):
        r = netsim(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "no lab" in r.stderr
    r = netsim("up", "/nonexistent/scenario.yaml", "--name", name)
    assert r.returncode == 2 and "nonexistent" in r.stderr

"""Scenario parsing and its errors: one line naming file, line and field."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netsim.errors import ScenarioError
from netsim.scenario import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
NAPT = ROOT / "scenarios" / "napt-basic.yaml"


def test_napt_basic_loads() -> None:
    s = load_scenario(NAPT).scenario
    assert [c.name for c in s.containers] == ["web", "client"]
    assert s.containers[0].publish[0].host_port == 8080
    assert s.containers[0].publish[0].container_port == 80
    assert s.containers[0].limits.memory_bytes == 64 << 20
    assert s.steps[0].from_ == "client" and s.steps[0].sport is None
    assert s.steps[0].expect.snat == "host:sport"
    assert s.steps[1].sport == 41000


BAD = [
    # (yaml, line, field fragment, message fragment)
    ("name: x\ncontainers:\n  - name: web\n    imag: busybox\n", 4, "containers[0].imag", "unknown field"),
    ("name: x\ncontainers:\n  - name: web\n    publish: ['80']\n", 4, "containers[0].publish[0]", "HOST_PORT"),
    ("name: x\ncontainers:\n  - name: Web\n", 3, "containers[0].name", "not a valid name"),
    ("name: x\ncontainers:\n  - name: a\n  - name: a\n", 4, "containers[1].name", "already used"),
    ("name: x\nsteps:\n  - name: s\n    from: ghost\n    send: ping\n    to: 198.51.100.9\n", 4, "steps[0].from", "unknown sender"),
    ("name: x\ncontainers:\n  - name: c\nsteps:\n  - name: s\n    from: c\n    send: http_get\n    to: nowhere:80\n", 8, "steps[0].to", "unknown target"),
    ("name: x\ncontainers:\n  - name: c\nsteps:\n  - name: s\n    from: c\n    send: http_get\n    to: 198.51.100.9\n", 8, "steps[0].to", "needs a port"),
    ("name: x\ncontainers:\n  - name: c\nsteps:\n  - name: s\n    from: c\n    send: teleport\n    to: c:1\n", 7, "steps[0].send", "Input should be"),
    ("name: x\nexternals:\n  - name: e\n    address: 10.9.9.9\n", 4, "externals[0].address", "upstream subnet"),
    ("name: x\nupstream:\n  subnet: 192.0.2.0/24\n", 3, "upstream.subnet", "192.0.2.0/24"),
    ("name: x\ncontainers:\n  - name: a\n    publish: ['8080:80']\n  - name: b\n    publish: ['8080:81']\n", 6, "containers[1].publish[0]", "already published"),
    ("name: x\ncontainers:\n  - name: a\n    limits: {memory: lots}\n", 4, "containers[0].limits.memory", "size"),
    ("name: x\ncontainers: [\n", 3, None, ""),
    ("- just\n- a list\n", 1, None, "YAML mapping"),
    ("name: x\nlinks:\n  - at: nowhere\n    rate: 1mbit\n", 3, "links[0].at", "unknown link"),
    ("name: x\nlinks:\n  - at: nic\n    rate: fast\n", 4, "links[0].rate", "not a rate"),
    ("name: x\nlinks:\n  - at: wan\n    loss: 5\n", 3, "links[0].at", "home-router"),
    ("name: x\nlinks:\n  - at: nic\n    jitter: 5ms\n", 4, "links[0].jitter", "needs a delay"),
    ("name: x\nupstream: {kind: home-router}\nexternals:\n  - name: l\n    address: 192.168.0.2\n", 5,
     "externals[0].address", "Docker host's address"),
    ("name: x\ncontainers:\n  - name: a\n    publish: ['10.1.1.1:80:80']\n", 4, "containers[0].publish[0]",
     "not the host's"),
    ("name: x\ncontainers:\n  - name: a\n    publish: ['8000-8002:80-81']\n", 4, "containers[0].publish[0]",
     "host range has 3 ports"),
    ("name: x\ncontainers:\n  - name: router\n", 3, "containers[0].name", "reserved"),
    ("containers: []\n", 1, "name", "missing"),
    ("name: x\ncontainers:\n  - name: a\n    networks: [nowhere]\n", 4, "containers[0].networks[0]",
     "unknown network"),
    ("name: x\nnetworks:\n  - name: bridge\n", 3, "networks[0].name", "predefined"),
    ("name: x\nnetworks:\n  - name: n\n    subnet: 172.17.5.0/24\n", 4, "networks[0].subnet", "overlaps"),
    ("name: x\nnetworks:\n  - name: n\n    subnet: 10.1.0.0/24\n    gateway: 10.2.0.1\n", 5,
     "networks[0].gateway", "not a host address"),
    ("name: x\nnetworks:\n  - {name: n, subnet: 192.0.2.0/24}\n", 3, "networks[0].subnet", "192.0.2.0/24"),
    ("name: x\nnetworks:\n  - {name: n, bridge: docker0}\n", 3, "networks[0].bridge", "already"),
    ("name: x\ncontainers:\n  - name: a\n    network_mode: host\n    publish: ['80:80']\n", 5,
     "containers[0].publish", "conflicting options"),
    ("name: x\ncontainers:\n  - name: a\n    network_mode: container:b\n  - name: b\n", 4,
     "containers[0].network_mode", "defined before"),
    ("name: x\ncontainers:\n  - name: a\n    network_mode: bridge2\n", 4, "containers[0].network_mode",
     "should match"),
    ("name: x\nnetworks: [{name: n, internal: true}]\ncontainers:\n  - name: a\n    networks: [n]\n"
     "    publish: ['80:80']\n", 6, "containers[0].publish", "internal"),
    ("name: x\nnetworks: [{name: n}]\ncontainers:\n  - name: a\nsteps:\n  - name: s\n    from: a\n"
     "    send: tcp_connect\n    to: a@n:80\n", 9, "steps[0].to", "not on network"),
    ("name: x\ncontainers:\n  - name: a\n    network_mode: none\nsteps:\n  - name: s\n    from: a\n"
     "    send: tcp_connect\n    to: a:80\n", 9, "steps[0].to", "no address"),
]


@pytest.mark.parametrize("text,line,field,fragment", BAD)
def test_errors_name_file_line_field(text: str, line: int, field: str | None, fragment: str) -> None:
    with pytest.raises(ScenarioError) as ei:
        parse_scenario(text, "bad.yaml")
    e = ei.value
    assert e.file == "bad.yaml"
    assert e.line == line, str(e)
    if field:
        assert e.field == field, str(e)
    assert fragment in str(e)
    assert "\n" not in str(e)
    assert e.exit_code == 2


def test_cli_validate_bad_file_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncontainers:\n  - name: web\n    imag: busybox\n")
    p = subprocess.run([sys.executable, "-m", "netsim.cli", "validate", str(bad)],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"{bad}:4: containers[0].imag: unknown field" in lines[0]


def test_cli_run_bad_file_exits_2_before_touching_the_kernel(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps:\n  - name: s\n    from: ghost\n    send: ping\n    to: 198.51.100.9\n")
    p = subprocess.run([sys.executable, "-m", "netsim.cli", "run", str(bad)],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2, p.stderr
    assert "steps[0].from" in p.stderr
    assert not Path("/run/netns/netsim-x-host").exists()


def test_json_schema_names_the_fields() -> None:
    from netsim.scenario import json_schema
    schema = json_schema()
    assert "containers" in schema["properties"] and "steps" in schema["properties"]

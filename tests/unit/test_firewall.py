"""Docker's iptables layout for napt-basic, compared with a golden dump (as moby keeps them)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from netsim.lab.firewall import render_rules
from netsim.model import plan
from netsim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
CONFIGS = {  # golden dump -> scenario (one per firewall configuration, as moby keeps them)
    "napt-basic": "scenarios/napt-basic.yaml",
    "publish": "scenarios/regression/publish.yaml",
    "hairpin-off": "scenarios/regression/hairpin-off.yaml",
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_rules_match_golden_dump(config: str) -> None:
    s = load_scenario(ROOT / CONFIGS[config]).scenario
    text = render_rules(s, plan(s), s.name)
    golden = GOLDEN / f"{config}.iptables"
    if os.environ.get("NETSIM_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_publish_variants_render_as_docker_does() -> None:
    s = load_scenario(ROOT / CONFIGS["publish"]).scenario
    rules = render_rules(s, plan(s), "p").splitlines()
    # bound to 127.0.0.1: DNAT only for that address, and raw drops it from anywhere but lo
    assert any(r.startswith("-A DOCKER -d 127.0.0.1/32 -p tcp -m tcp --dport 8081 ") for r in rules)
    assert any(r.startswith("-A PREROUTING -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 8081 ")
               for r in rules)
    # a range is one DNAT per port
    assert any("--dport 9001 " in r and r.endswith("--to-destination 172.17.0.2:81") for r in rules)
    # containers with published ports cannot be reached directly from outside the bridge
    assert "-A PREROUTING -d 172.17.0.3/32 ! -i docker0 " in "\n".join(rules)


def test_every_rule_is_tagged_with_the_lab() -> None:
    s = load_scenario(ROOT / "scenarios" / "napt-basic.yaml").scenario
    rules = [ln for ln in render_rules(s, plan(s), "lab7").splitlines() if ln.startswith("-A")]
    assert rules and all('--comment "netsim:lab7"' in r for r in rules)
    assert any("-j DNAT --to-destination 172.17.0.2:80" in r and "--dport 8080" in r for r in rules)
    assert any(r.startswith("-A POSTROUTING -s 172.17.0.0/16 ! -o docker0") and r.endswith("MASQUERADE")
               for r in rules)

"""Docker's iptables layout for napt-basic, compared with a golden dump (as moby keeps them)."""
from __future__ import annotations

import os
from pathlib import Path

from netsim.lab.firewall import render_rules
from netsim.model import plan
from netsim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "napt-basic.iptables"


def test_rules_match_golden_dump() -> None:
    s = load_scenario(ROOT / "scenarios" / "napt-basic.yaml").scenario
    text = render_rules(s, plan(s), "napt-basic")
    if os.environ.get("NETSIM_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_every_rule_is_tagged_with_the_lab() -> None:
    s = load_scenario(ROOT / "scenarios" / "napt-basic.yaml").scenario
    rules = [ln for ln in render_rules(s, plan(s), "lab7").splitlines() if ln.startswith("-A")]
    assert rules and all('--comment "netsim:lab7"' in r for r in rules)
    assert any("-j DNAT --to-destination 172.17.0.2:80" in r and "--dport 8080" in r for r in rules)
    assert any(r.startswith("-A POSTROUTING -s 172.17.0.0/16 ! -o docker0") and r.endswith("MASQUERADE")
               for r in rules)

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
    "networks": "scenarios/regression/networks.yaml",            # moby usernet-portmap-noproxy.md
    "internal-network": "scenarios/regression/internal-network.yaml",   # moby usernet-internal.md
    "two-networks": "scenarios/regression/two-networks.yaml",
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


def _rules(config: str) -> list[str]:
    s = load_scenario(ROOT / CONFIGS[config]).scenario
    return render_rules(s, plan(s), "t").splitlines()


def test_user_networks_follow_mobys_layout() -> None:
    rules = _rules("networks")
    front = plan(load_scenario(ROOT / CONFIGS["networks"]).scenario).networks["front"].bridge
    assert front.startswith("br-") and len(front) == 15
    # nat POSTROUTING: the newest network's pair first (inserted), docker0's last
    post = [r.split(" -m comment")[0] for r in rules if r.startswith("-A POSTROUTING") and "--dport" not in r]
    assert post == ["-A POSTROUTING -o br-back -m addrtype --src-type LOCAL",
                    "-A POSTROUTING -s 10.10.0.0/24 ! -o br-back",
                    f"-A POSTROUTING -o {front} -m addrtype --src-type LOCAL",
                    f"-A POSTROUTING -s 172.18.0.0/16 ! -o {front}",
                    "-A POSTROUTING -o docker0 -m addrtype --src-type LOCAL",
                    "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0"]
    # isolation: one DROP per bridge after every published port's ACCEPT
    docker = [r.split(" -m comment")[0] for r in rules if r.startswith("-A DOCKER ")]
    assert docker[-3:] == ["-A DOCKER ! -i docker0 -o docker0", f"-A DOCKER ! -i {front} -o {front}",
                           "-A DOCKER ! -i br-back -o br-back"]
    assert "-A DOCKER -d 10.10.0.2/32 ! -i br-back -o br-back -p tcp -m tcp --dport 80" in docker
    assert any(r.startswith("-A PREROUTING -d 10.10.0.2/32 ! -i br-back ") for r in rules)


def test_internal_network_has_no_way_out() -> None:
    rules = _rules("internal-network")
    br = plan(load_scenario(ROOT / CONFIGS["internal-network"]).scenario).networks["secret"].bridge
    assert not any(br in r for r in rules if r.startswith("-A POSTROUTING"))        # no MASQUERADE
    assert not any(f"-o {br} " in r for r in rules if r.startswith(("-A DOCKER-CT", "-A DOCKER-BRIDGE")))
    assert [r.split(" -m comment")[0] for r in rules if r.startswith("-A DOCKER-INTERNAL")] == [
        f"-A DOCKER-INTERNAL ! -s 172.18.0.0/16 -o {br}", f"-A DOCKER-INTERNAL ! -d 172.18.0.0/16 -i {br}"]
    assert any(r.startswith(f"-A DOCKER-FORWARD -i {br} -o {br} ") for r in rules)


def test_two_network_container_is_published_on_its_gateway_network() -> None:
    rules = _rules("two-networks")
    # duo is on [front, back]: Docker's gateway endpoint is the first non-internal network by name
    assert any(r.endswith("-j DNAT --to-destination 172.19.0.3:80") for r in rules)

"""The model's predictions: addressing as Docker does it, paths, NAT rewrites per hop."""
from __future__ import annotations

from pathlib import Path

import networkx as nx

from netsim.model import plan, predict
from netsim.model.nat import NatState
from netsim.scenario import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]


def _napt():
    return load_scenario(ROOT / "scenarios" / "napt-basic.yaml").scenario


def test_ipam_and_names_follow_docker() -> None:
    p = plan(_napt())
    assert str(p.gateway) == "172.17.0.1"
    assert [str(c.ip) for c in p.containers.values()] == ["172.17.0.2", "172.17.0.3"]
    assert p.containers["web"].mac == "02:42:ac:11:00:02"
    assert all(c.veth.startswith("veth") and len(c.veth) == 11 for c in p.containers.values())
    assert p.captured_interfaces[-2:] == ("docker0", "eth0")


def test_graph_has_every_namespace_and_a_path_through_the_nic() -> None:
    p = predict(_napt())
    g = p.graph
    assert {"ns:host", "ns:up", "ns:c:web", "ns:c:client", "ns:x:server", "ns:x:outsider"} <= set(g)
    assert nx.has_path(g, "ns:c:client", "ns:x:server")


def test_snat_step_keeps_the_port_and_rewrites_only_on_the_nic() -> None:
    sp = predict(_napt()).step("client-fetch")
    assert sp.nat == ("snat",)
    hops = [(h.iface, str(h.tuple)) for h in sp.forward]
    veth = plan(_napt()).containers["client"].veth
    assert hops == [
        (veth, "tcp 172.17.0.3:* -> 198.51.100.10:80"),
        ("docker0", "tcp 172.17.0.3:* -> 198.51.100.10:80"),
        ("eth0", "tcp 203.0.113.2:* -> 198.51.100.10:80"),   # '*': the ephemeral port, kept
    ]
    assert [h.iface for h in sp.reply] == ["eth0", "docker0", veth]
    orig, reply = sp.conntrack
    assert str(orig) == "tcp 172.17.0.3:* -> 198.51.100.10:80"
    assert str(reply) == "tcp 198.51.100.10:80 -> 203.0.113.2:*"
    assert sp.values["snat"] == "203.0.113.2:?"


def test_fixed_source_port_is_predicted_exactly() -> None:
    s = parse_scenario(ROOT.joinpath("scenarios", "napt-basic.yaml").read_text().replace(
        "    to: server:80\n", "    to: server:80\n    sport: 40000\n")).scenario
    sp = predict(s).step("client-fetch")
    assert str(sp.forward[-1].tuple) == "tcp 203.0.113.2:40000 -> 198.51.100.10:80"
    assert sp.values["snat"] == "203.0.113.2:40000"


def test_dnat_step_rewrites_the_destination_on_entry() -> None:
    sp = predict(_napt()).step("outsider-fetch")
    assert sp.nat == ("dnat",) and sp.receiver == "web"
    assert [str(h.tuple) for h in sp.forward] == [
        "tcp 198.51.100.20:41000 -> 203.0.113.2:8080",
        "tcp 198.51.100.20:41000 -> 172.17.0.2:80",
        "tcp 198.51.100.20:41000 -> 172.17.0.2:80",
    ]
    assert sp.values["server_sees"] == "198.51.100.20:41000"
    assert sp.values["dnat"] == "172.17.0.2:80"


def test_unpublished_host_port_gets_no_reply() -> None:
    s = parse_scenario("""
name: t
containers: [{name: web, ready_port: 80}]
externals: [{name: out, address: 198.51.100.20}]
steps:
  - {name: s, from: out, send: tcp_connect, to: "host:9999"}
""").scenario
    sp = predict(s).step("s")
    assert not sp.reply_expected and sp.nat == ()


def test_masquerade_port_selection_matches_linux() -> None:
    nat = NatState()
    # free: the port is kept
    assert nat.masquerade("udp", "172.17.0.3", 40000, "198.51.100.10", 53) == (40000, False)
    # same inside socket, another destination: the mapping is reused
    assert nat.masquerade("udp", "172.17.0.3", 40000, "198.51.100.11", 53) == (40000, False)
    # another inside host, same port and destination: collision, remapped (port unknowable)
    assert nat.masquerade("udp", "172.17.0.2", 40000, "198.51.100.10", 53) == (None, True)
    # but towards a destination where 40000 is free, that host keeps its port
    assert nat.masquerade("udp", "172.17.0.2", 40001, "198.51.100.10", 53) == (40001, False)

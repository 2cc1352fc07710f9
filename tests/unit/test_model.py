"""The model's predictions: addressing as Docker does it, paths, NAT rewrites per hop."""
from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest

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


def _scenario(rel: str):
    return load_scenario(ROOT / rel).scenario


def test_hairpin_predictions_follow_the_measured_kernel() -> None:
    # both switches on (Docker's userland-proxy=false defaults)
    p = predict(_scenario("scenarios/regression/hairpin.yaml"))
    self_, peer, loop = p.step("hairpin-self"), p.step("hairpin-peer"), p.step("host-loopback")
    assert self_.reply_expected and self_.nat == ("dnat", "snat")
    assert self_.values["server_sees"] == "172.17.0.1:?"          # the gateway, port kept
    # br_netfilter DNATs at the bridge port: docker0 already sees the container's address
    assert str(self_.forward[1].tuple) == "tcp 172.17.0.2:* -> 172.17.0.2:80"
    assert peer.reply_expected and peer.values["server_sees"] == "172.17.0.3:?"
    assert [h.iface for h in peer.reply] == [p.plan.containers["web"].veth, p.plan.containers["client"].veth]
    assert loop.values["server_sees"] == "172.17.0.1:42000" and loop.nat == ("dnat", "snat")
    # switches off: routed hairpin works without hairpin mode, the peer's reply is not de-NATed
    off = predict(_scenario("scenarios/regression/hairpin-off.yaml"))
    assert off.step("hairpin-self").reply_expected
    assert not off.step("hairpin-peer").reply_expected
    # hairpin mode off with br_netfilter: the bridge refuses to send the frame back
    nomode = predict(_scenario("scenarios/regression/hairpin-nomode.yaml"))
    assert not nomode.step("hairpin-self").reply_expected and nomode.step("hairpin-self").conntrack is None
    assert nomode.step("hairpin-peer").reply_expected


def test_publish_variants() -> None:
    p = predict(_scenario("scenarios/regression/publish.yaml"))
    assert not p.step("loopback-only-from-outside").reply_expected
    assert p.step("loopback-only-from-host").values["dnat"] == "172.17.0.2:80"
    assert p.step("range-second").values["dnat"] == "172.17.0.2:81"
    assert not p.step("range-second").reply_expected            # nothing listens on 81
    assert p.step("second-container").receiver == "web2"


def test_double_nat_translates_twice() -> None:
    p = predict(_scenario("scenarios/regression/double-nat.yaml"))
    assert str(p.plan.nic_ip) == "192.168.0.2/24" and str(p.plan.home_wan) == "203.0.113.2/24"
    out = p.step("container-out")
    assert out.nat == ("snat", "snat-home")
    assert [(h.iface, str(h.tuple)) for h in out.forward][-2:] == [
        ("eth0", "tcp 192.168.0.2:* -> 198.51.100.10:80"),
        ("wan0", "tcp 203.0.113.2:* -> 198.51.100.10:80")]
    # the Docker host's conntrack holds its own translation only
    assert str(out.conntrack[1]) == "tcp 198.51.100.10:80 -> 192.168.0.2:*"
    assert p.step("lan-host-out").nat == ("snat-home",)
    assert not p.step("internet-to-lan").reply_expected


def test_networks_ipam_bridges_and_captured_interfaces() -> None:
    p = plan(_scenario("scenarios/regression/networks.yaml"))
    assert list(p.networks) == ["bridge", "front", "back"]
    assert str(p.networks["front"].subnet) == "172.18.0.0/16"          # Docker's default pool, in order
    assert p.networks["back"].bridge == "br-back"
    assert [str(p.containers[n].ip) for n in ("web-a", "client-a", "web-b", "client-d")] == [
        "172.18.0.2", "172.18.0.3", "10.10.0.2", "172.17.0.2"]       # .2, .3, ... per network
    veths = [e.veth for e in p.endpoints()]
    assert p.captured_interfaces == (*veths, "docker0", p.networks["front"].bridge, "br-back", "eth0")
    g = predict(_scenario("scenarios/regression/networks.yaml")).graph
    assert {f"if:host:{n.bridge}" for n in p.networks.values()} <= set(g)


def test_networks_isolation_and_crossing_by_a_published_port() -> None:
    p = predict(_scenario("scenarios/regression/networks.yaml"))
    same, raw, plain = p.step("same-network"), p.step("cross-network-published"), p.step("cross-network-plain")
    assert same.reply_expected and same.nat == ()
    assert not raw.reply_expected and raw.conntrack is None
    assert [h.iface for h in raw.forward] == [p.plan.containers["client-a"].veth]   # raw drop at the port
    assert not plain.reply_expected and [h.iface for h in plain.forward][-1] == "docker0"
    across = p.step("across-by-published-port")
    assert across.nat == ("dnat", "snat") and across.values["server_sees"] == "10.10.0.1:?"
    assert p.step("back-out").values["snat"] == "203.0.113.2:40100"


def test_internal_network_and_two_network_container() -> None:
    p = predict(_scenario("scenarios/regression/internal-network.yaml"))
    assert p.step("inside").reply_expected
    out = p.step("no-way-out")
    assert not out.reply_expected and out.forward == () and out.conntrack is None
    assert not p.step("no-way-in").reply_expected and p.step("host-reaches-it").reply_expected
    t = predict(_scenario("scenarios/regression/two-networks.yaml"))
    duo = t.plan.containers["duo"]
    assert [(e.network, e.ifname, str(e.ip)) for e in duo.endpoints] == [
        ("front", "eth0", "172.18.0.3"), ("back", "eth1", "172.19.0.3")]
    assert duo.gateway_network == "back"              # moby: non-internal first, then by name
    assert t.step("duo-to-back").values["server_sees"] == "172.19.0.3:?"
    assert not t.step("not-a-router").reply_expected  # containers never forward
    assert t.step("published").values["dnat"] == "172.19.0.3:80"


def test_network_modes() -> None:
    p = predict(_scenario("scenarios/regression/network-modes.yaml"))
    out = p.step("host-mode-out")
    assert out.nat == () and [h.iface for h in out.forward] == ["eth0"]     # the host's own traffic
    assert out.values["snat"] == "203.0.113.2:40300"
    assert p.step("host-mode-serves").receiver == "hostweb" and p.step("host-mode-serves").reply_expected
    assert p.step("sidecar-out").forward[0].iface == p.plan.containers["web"].veth
    assert p.step("sidecar-serves").values["dnat"] == "172.17.0.2:8081"
    alone = p.step("none-is-alone")
    assert not alone.reply_expected and alone.forward == ()
    assert set(p.plan.modes) == {"hostweb", "sidecar", "lonely"}


def test_restart_takes_the_lowest_free_address_as_dockers_ipam() -> None:
    from netsim.model.addressing import readdress, with_addresses
    s = parse_scenario("""
name: rs
networks: [{name: back, subnet: 10.9.0.0/24}]
containers:
  - {name: a, command: [sleep, "1"], networks: [bridge, back]}
  - {name: b, command: [sleep, "1"]}
  - {name: c, command: [sleep, "1"]}
  - {name: d, command: [sleep, "1"], networks: [back], ip: 10.9.0.2}
""").scenario
    p = plan(s)
    assert [str(p.containers[n].ip) for n in "abcd"] == ["172.17.0.2", "172.17.0.3", "172.17.0.4", "10.9.0.2"]
    assert str(p.containers["a"].endpoints[1].ip) == "10.9.0.3"     # d's fixed address is held back
    # a and b stopped; b starts first and takes a's old address; a then gets the next free one
    running = {n: p.containers[n] for n in "cd"}
    b = readdress(p, s, "b", running)
    assert (str(b.ip), b.mac) == ("172.17.0.2", "02:42:ac:11:00:02")
    running["b"] = b
    a = readdress(p, s, "a", running)
    assert [str(e.ip) for e in a.endpoints] == ["172.17.0.3", "10.9.0.3"]   # back: still free, kept
    assert [e.veth for e in a.endpoints] == [e.veth for e in p.containers["a"].endpoints]
    assert a.mac == "02:42:ac:11:00:03" and a.endpoints[1].mac == "02:42:0a:09:00:03"
    # no preference for the old address: alone on its network, c (.4) restarts on the lowest, .2
    assert str(readdress(p, s, "c", {"c": p.containers["c"]}).ip) == "172.17.0.2"
    # a fixed address must be free: Docker's "address already in use"
    squatter = {"x": p.containers["a"].__class__("x", p.containers["d"].ip, "", "", endpoints=(
        p.containers["d"].endpoints[0].__class__("x", "back", p.containers["d"].ip, "", "vethx", "eth0"),))}
    with pytest.raises(ValueError, match="10.9.0.2 on back is in use"):
        readdress(p, s, "d", squatter)
    # the running lab's plan: stopped containers hold nothing, restarted ones their new address
    live = with_addresses(p, {"a": a, "b": b, "c": None})
    assert set(live.containers) == {"a", "b", "d"} and live.containers["b"].ip == b.ip

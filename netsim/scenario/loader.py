"""Load a scenario file: YAML -> Scenario, with every error naming file, line and field."""
from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import ScenarioError
from .networks import container_networks, resolve_networks
from .schema import DEFAULT_NETWORK, Scenario

__all__ = ["load_scenario", "parse_scenario", "LoadedScenario", "split_endpoint"]

Loc = tuple[str | int, ...]
# Names every scenario has: the Docker host (its NIC address) and the bridge's gateway address.
RESERVED = ("host", "gateway", "router")   # router: the home router's public address


class LoadedScenario:
    """A validated Scenario plus where it came from (for the trace manifest and messages)."""

    def __init__(self, scenario: Scenario, path: str, text: str, lines: dict[Loc, int]) -> None:
        self.scenario, self.path, self.text, self.lines = scenario, path, text, lines
        self.sha256 = hashlib.sha256(text.encode()).hexdigest()


def _line_map(node: yaml.Node, loc: Loc, out: dict[Loc, int]) -> None:
    out.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
            out[loc + (k,)] = key.start_mark.line + 1
            _line_map(value, loc + (k,), out)
            out[loc + (k,)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, loc + (i,), out)


def _line_for(lines: dict[Loc, int], loc: Loc) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get((), None)


def _field(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top>"


def split_endpoint(text: str) -> tuple[str, int | None]:
    """`NAME[:PORT]` or `IP[:PORT]` -> (name or ip, port or None)."""
    head, sep, tail = str(text).strip().rpartition(":")
    if not sep:
        return tail, None
    if not tail.isdigit() or not 0 < int(tail) < 65536:
        raise ValueError(f"{text!r}: port must be a number 1..65535")
    return head, int(tail)


def parse_scenario(text: str, path: str = "<string>") -> LoadedScenario:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ScenarioError(str(getattr(e, "problem", e)), file=path,
                            line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict) or node is None:
        raise ScenarioError("a scenario is a YAML mapping (name, containers, externals, steps)",
                            file=path, line=1)
    lines: dict[Loc, int] = {}
    _line_map(node, (), lines)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        loc = tuple("from" if p == "from_" else p for p in loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        more = f" (and {len(e.errors()) - 1} more problem(s))" if len(e.errors()) > 1 else ""
        raise ScenarioError(msg + more, file=path, line=_line_for(lines, loc), field=_field(loc)) from None
    _check_semantics(scenario, path, lines)
    return LoadedScenario(scenario, path, text, lines)


def load_scenario(path: str | Path) -> LoadedScenario:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ScenarioError("no such file", file=str(p)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(f"cannot read: {e}", file=str(p)) from None
    return parse_scenario(text, str(p))


def _check_semantics(s: Scenario, path: str, lines: dict[Loc, int]) -> None:
    def fail(loc: Loc, msg: str) -> None:
        raise ScenarioError(msg, file=path, line=_line_for(lines, loc), field=_field(loc))

    names: dict[str, Loc] = {}
    named: list[tuple[str, list[str]]] = [("containers", [c.name for c in s.containers]),
                                          ("externals", [x.name for x in s.externals])]
    for kind, items in named:
        for i, item_name in enumerate(items):
            if item_name in names:
                fail((kind, i, "name"), f"{item_name!r} is already used at {_field(names[item_name])}")
            names[item_name] = (kind, i, "name")

    bridge = s.host.bridge
    gw = bridge.gateway or next(bridge.subnet.hosts())
    if gw not in bridge.subnet:
        fail(("host", "bridge", "gateway"), f"{gw} is not in {bridge.subnet}")
    if s.host.nic.gateway not in s.host.nic.address.network:
        fail(("host", "nic", "gateway"), f"{s.host.nic.gateway} is not in {s.host.nic.address.network}")
    for net, loc in ((s.host.nic.address.network, ("host", "nic", "address")),
                     (s.upstream.subnet, ("upstream", "subnet"))):
        if net.overlaps(bridge.subnet):
            fail(loc, f"{net} overlaps the bridge subnet {bridge.subnet}")
    if s.upstream.subnet.overlaps(s.host.nic.address.network):
        fail(("upstream", "subnet"), f"{s.upstream.subnet} overlaps the NIC's network")
    forbidden = ipaddress.IPv4Network("192.0.2.0/24")
    for net, loc in ((s.upstream.subnet, ("upstream", "subnet")),
                     (s.host.nic.address.network, ("host", "nic", "address"))):
        if net.overlaps(forbidden):
            fail(loc, "192.0.2.0/24 is this machine's own network; use 198.51.100.0/24 or 203.0.113.0/24")

    nets = _check_networks(s, fail)
    used_ips: dict[ipaddress.IPv4Address, Loc] = {n.gateway: ("networks", n.index) if not n.default
                                                  else ("host", "bridge") for n in nets.values()}
    published: dict[tuple[int, str], tuple[Loc, str | None]] = {}
    modes: dict[str, str] = {}
    for i, c in enumerate(s.containers):
        if c.network_mode is not None:
            for fld in ("networks", "publish", "ip"):
                if getattr(c, fld):
                    fail(("containers", i, fld), f"conflicting options: {fld} and network_mode {c.network_mode} "
                         "(Docker: a container in another network namespace has no endpoints of its own)")
            if c.network_mode.startswith("container:"):
                peer = c.network_mode.removeprefix("container:")
                if peer == c.name:
                    fail(("containers", i, "network_mode"), "a container cannot join its own network namespace")
                if peer not in [x.name for x in s.containers[:i]]:
                    fail(("containers", i, "network_mode"), f"container:{peer}: no container {peer!r} defined "
                         "before this one (Docker needs it running first)")
            modes[c.name] = c.network_mode
        joined = container_networks(c)
        for j, nname in enumerate(joined):
            if nname not in nets:
                fail(("containers", i, "networks", j), f"unknown network {nname!r} (known: {', '.join(nets)})")
            if nname in joined[:j]:
                fail(("containers", i, "networks", j), f"network {nname!r} is joined twice")
        if c.ip is not None:
            first = nets[joined[0]]
            if c.ip not in first.subnet or c.ip in (first.subnet.network_address, first.subnet.broadcast_address):
                fail(("containers", i, "ip"), f"{c.ip} is not a host address of {first.subnet} "
                     f"(network {first.name})")
            if c.ip in used_ips:
                fail(("containers", i, "ip"), f"{c.ip} is already used by {_field(used_ips[c.ip])}")
            used_ips[c.ip] = ("containers", i, "ip")
        if c.publish and joined and all(nets[n].internal for n in joined):
            fail(("containers", i, "publish"), "the container is on internal networks only: Docker publishes "
                 "ports on the network that gives it a default route, and internal networks give none")
        for j, p in enumerate(c.publish):
            if p.host_ip is not None and p.host_ip not in (s.host.nic.address.ip,
                                                           ipaddress.IPv4Address("127.0.0.1")):
                fail(("containers", i, "publish", j),
                     f"host address {p.host_ip} is not the host's: use the NIC address "
                     f"{s.host.nic.address.ip} or 127.0.0.1")
            for hp, _cp in p.pairs():
                key = (hp, p.proto)
                if key in published:
                    other, other_ip = published[key]
                    if other_ip is None or p.host_ip is None or other_ip == str(p.host_ip):
                        fail(("containers", i, "publish", j),
                             f"host port {hp}/{p.proto} is already published by {_field(other)} "
                             "(Docker: port is already allocated)")
                published[key] = (("containers", i, "publish", j), str(p.host_ip) if p.host_ip else None)
    ext_net = s.upstream.subnet
    router = next(ext_net.hosts())
    home = s.upstream.kind == "home-router"
    lan = s.upstream.lan
    if home:
        for net, loc in ((lan, ("upstream", "lan")), (s.upstream.wan.network, ("upstream", "wan"))):
            for other_net in [ext_net] + [n.subnet for n in nets.values()]:
                if net.overlaps(other_net):
                    fail(loc, f"{net} overlaps {other_net}")
        if lan.overlaps(s.upstream.wan.network):
            fail(("upstream", "wan"), f"{s.upstream.wan.network} overlaps the LAN {lan}")
        if lan.prefixlen > 29:
            fail(("upstream", "lan"), f"{lan} is too small for a router, the Docker host and LAN hosts")
    lan_taken = set(list(lan.hosts())[:2]) if home else set()
    for i, x in enumerate(s.externals):
        if home and x.address in lan:
            if x.address in lan_taken or x.address in (lan.network_address, lan.broadcast_address):
                fail(("externals", i, "address"),
                     f"{x.address} is the home router's or the Docker host's address on {lan}")
        elif x.address not in ext_net or x.address == router:
            where = f"the home LAN {lan} or " if home else ""
            fail(("externals", i, "address"),
                 f"{x.address} must be a host address of {where}the upstream subnet {ext_net} "
                 f"other than the router {router}")
        if x.address in used_ips:
            fail(("externals", i, "address"), f"{x.address} is already used")
        used_ips[x.address] = ("externals", i, "address")

    seen_links: set[str] = set()
    for i, ln in enumerate(s.links):
        if ln.at in modes:
            fail(("links", i, "at"), f"container {ln.at!r} has network_mode {modes[ln.at]}: it has no link of its own")
        if ln.at not in ("nic", "wan") and ln.at not in [c.name for c in s.containers]:
            fail(("links", i, "at"), f"unknown link {ln.at!r}: 'nic', 'wan' or a container's name")
        if ln.at == "wan" and s.upstream.kind != "home-router":
            fail(("links", i, "at"), "'wan' is the home router's public side: needs upstream kind home-router")
        if ln.at in seen_links:
            fail(("links", i, "at"), f"link {ln.at!r} is impaired twice")
        seen_links.add(ln.at)
        if ln.jitter is not None and ln.delay is None:
            fail(("links", i, "jitter"), "jitter needs a delay")
        if ln.rate is None and ln.loss is None and ln.delay is None:
            fail(("links", i), "a link needs at least one of rate, loss, delay")

    step_names: set[str] = set()
    for i, st in enumerate(s.steps):
        if st.name in step_names:
            fail(("steps", i, "name"), f"step {st.name!r} is defined twice")
        step_names.add(st.name)
        if st.from_ not in names and st.from_ != "host":
            fail(("steps", i, "from"), f"unknown sender {st.from_!r} (known: "
                 f"{', '.join(list(names) + ['host'])})")
        try:
            target, port = split_endpoint(st.to)
        except ValueError as e:
            fail(("steps", i, "to"), str(e))
            raise  # unreachable
        if "@" in target or target in modes:
            why = _endpoint_problem(target, s, nets, modes)
            if why:
                fail(("steps", i, "to"), why)
        elif target not in names and target not in RESERVED:
            try:
                ipaddress.IPv4Address(target)
            except ValueError:
                fail(("steps", i, "to"), f"unknown target {target!r}: a container, an external, "
                     "'host', 'gateway', CONTAINER@NETWORK or an IPv4 address")
        if st.send == "ping":
            if port is not None:
                fail(("steps", i, "to"), "ping takes no port")
            if st.sport is not None:
                fail(("steps", i, "sport"), "ping has no source port")
        elif port is None:
            fail(("steps", i, "to"), f"{st.send} needs a port: NAME:PORT")
        for field in ("snat", "dnat", "server_sees"):
            ref = getattr(st.expect, field)
            if ref is None:
                continue
            try:
                ename, _ = split_endpoint(ref.removesuffix(":sport") + (":1" if ref.endswith(":sport") else ""))
            except ValueError as e:
                fail(("steps", i, "expect", field), str(e))
                raise
            if "@" in ename or ename in modes:
                why = _endpoint_problem(ename, s, nets, modes)
                if why:
                    fail(("steps", i, "expect", field), why)
            elif ename not in names and ename not in RESERVED:
                try:
                    ipaddress.IPv4Address(ename)
                except ValueError:
                    fail(("steps", i, "expect", field), f"unknown endpoint {ename!r}")


def _endpoint_problem(ref: str, s: Scenario, nets: dict[str, Any], modes: dict[str, str]) -> str | None:
    """Why `NAME@NETWORK` (or a container with a network_mode) cannot be an address, or None."""
    name, _, net = ref.partition("@")
    if not net:
        if modes.get(name) == "none":
            return f"container {name!r} has network_mode none: it has no address"
        return None
    if net not in nets:
        return f"{ref!r}: unknown network {net!r} (known: {', '.join(nets)})"
    if name == "gateway":
        return None
    c = next((c for c in s.containers if c.name == name), None)
    if c is None:
        return f"{ref!r}: no container {name!r}"
    if net not in container_networks(c):
        return f"{ref!r}: container {name!r} is not on network {net!r}"
    return None


def _check_networks(s: Scenario, fail: Any) -> dict[str, Any]:
    """User-defined networks: names, subnets, gateways and bridge names that Docker would accept."""
    nets = resolve_networks(s)
    forbidden = ipaddress.IPv4Network("192.0.2.0/24")
    seen: dict[str, int] = {}
    bridges = {s.host.bridge.name: "the default network's bridge", s.host.nic.name: "the host's NIC", "lo": "loopback"}
    fixed = [(("host", "nic", "address"), s.host.nic.address.network), (("upstream", "subnet"), s.upstream.subnet)]
    for i, n in enumerate(s.networks):
        if n.name in (DEFAULT_NETWORK, "host", "none"):
            fail(("networks", i, "name"), f"{n.name!r} is one of Docker's predefined networks")
        if n.name in seen:
            fail(("networks", i, "name"), f"network {n.name!r} is already defined at networks[{seen[n.name]}]")
        seen[n.name] = i
        spec = nets[n.name]
        if n.subnet is None and spec.subnet.prefixlen == 30:
            fail(("networks", i), "no free 172.18-31.0.0/16 subnet left: give this network a subnet")
        if spec.subnet.prefixlen > 29:
            fail(("networks", i, "subnet"), f"{spec.subnet} is too small for a gateway and containers")
        if spec.subnet.overlaps(forbidden):
            fail(("networks", i, "subnet"), "192.0.2.0/24 is this machine's own network; use another subnet")
        if spec.gateway not in spec.subnet or spec.gateway in (spec.subnet.network_address,
                                                               spec.subnet.broadcast_address):
            fail(("networks", i, "gateway"), f"{spec.gateway} is not a host address of {spec.subnet}")
        others = [(("host", "bridge", "subnet"), s.host.bridge.subnet)] + fixed + [
            (("networks", j, "subnet"), nets[m.name].subnet) for j, m in enumerate(s.networks[:i])]
        if s.upstream.kind == "home-router":
            others += [(("upstream", "lan"), s.upstream.lan), (("upstream", "wan"), s.upstream.wan.network)]
        for loc, other in others:
            if spec.subnet.overlaps(other):
                fail(("networks", i, "subnet"), f"{spec.subnet} overlaps {other} ({_field(loc)})")
        if spec.bridge in bridges:
            fail(("networks", i, "bridge"), f"bridge name {spec.bridge!r} is already {bridges[spec.bridge]}")
        bridges[spec.bridge] = f"the bridge of network {n.name!r}"
    return dict(nets)

"""Stop, start and restart one container of a running lab (the own engine), as Docker does it.

Stopping a container releases its network endpoints: its network namespace and veths go, its
addresses return to the networks' pools, and its published ports' rules are withdrawn.
Starting it again allocates each network's lowest free address (model.addressing.readdress):
the old address when it is still free, another one when a container took it meanwhile — the
seed's "an address can change when the container restarts".  The rules that name the address
(DNAT of published ports, the raw-table guard, hairpin MASQUERADE) follow it.  The container's
root filesystem, its writable layer and its logs stay.

Containers with a `network_mode` (host, none, container:NAME) have no endpoints of their own:
only their processes stop and start.  A container whose namespace others join (container:NAME)
cannot stop while they run.

The lab's current addresses live in LABDIR/addresses.json (container -> {network: address}, or
null while stopped), written under LABDIR/lifecycle.lock so that two netsim processes do not
hand out the same address.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LabError, UsageError
from ..model.addressing import ContainerAddr, readdress, with_addresses
from . import netns
from .bridge import HostBridge, plan_links
from .command import in_netns, run
from .firewall import render_rules
from .lab import Lab

if TYPE_CHECKING:
    from runtime import Container

__all__ = ["current_addresses", "restart_container", "save_addresses", "saved_addresses", "start_container",
           "stop_container"]

ADDRESSES = "addresses.json"


@contextmanager
def _locked(lab: Lab) -> Iterator[None]:
    with open(lab.dir / "lifecycle.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def saved_addresses(lab_dir: Path) -> dict[str, dict[str, str] | None]:
    """LABDIR/addresses.json: container -> {network: address}, None while stopped ({} if none)."""
    try:
        saved: dict[str, dict[str, str] | None] = json.loads((lab_dir / ADDRESSES).read_text())
    except FileNotFoundError:
        return {}
    return saved


def current_addresses(lab: Lab) -> dict[str, ContainerAddr | None]:
    """Each container with endpoints -> its addresses now (None while stopped): the plan's, as
    changed by restarts."""
    saved = saved_addresses(lab.dir)
    out: dict[str, ContainerAddr | None] = {}
    for name, addr in lab.plan.containers.items():
        if name not in saved:
            out[name] = addr
            continue
        ips = saved[name]
        if ips is None:
            out[name] = None
            continue
        out[name] = addr.readdressed([ipaddress.IPv4Address(ips[e.network]) for e in addr.endpoints])
    return out


def save_addresses(lab_dir: Path, current: Mapping[str, ContainerAddr | None]) -> None:
    data = {n: None if a is None else {e.network: str(e.ip) for e in a.endpoints} for n, a in current.items()}
    tmp = lab_dir / (ADDRESSES + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(lab_dir / ADDRESSES)


def _runtime_container(lab: Lab, name: str) -> "Container":
    from runtime.errors import RuntimeErrorBase

    from .engines.own import lab_runtime
    if lab.engine.name != "own":
        raise UsageError(f"lab {lab.name} runs on --engine {lab.engine.name}: stop/start/restart work on "
                         "netsim's own engine")
    if name not in {c.name for c in lab.scenario.containers}:
        names = ", ".join(c.name for c in lab.scenario.containers) or "none"
        raise UsageError(f"lab {lab.name} has no container {name!r} (its containers: {names})")
    rt = lab_runtime(lab.dir)
    try:
        if rt is None:
            raise LabError(f"lab {lab.name} has no runtime state")
        return rt.get(name)
    except RuntimeErrorBase as e:
        raise LabError(f"container {name}: {e}") from None


def _dependents(lab: Lab, name: str) -> list[str]:
    return [c for c, mode in lab.plan.modes.items() if mode == f"container:{name}"]


def _apply_rules(lab: Lab, current: dict[str, ContainerAddr | None]) -> None:
    """Docker's rules for the lab as it is now: published ports of running containers only,
    at their current addresses."""
    live = with_addresses(lab.plan, current)
    rules = render_rules(lab.scenario, live, lab.name)
    # iptables-restore replaces the raw table: keep the link impairments' random-loss rules there
    raw = run(in_netns(lab.host_netns, ["iptables-save", "-t", "raw"])).stdout.splitlines()
    kept = [ln for ln in raw if ln.startswith("-A ") and f"netsim:{lab.name}:loss" in ln]
    if kept:
        head, sep, tail = rules.partition("COMMIT\n")   # the first section is *raw
        assert head.startswith("*raw")
        rules = head + "".join(ln + "\n" for ln in kept) + sep + tail
    lab.apply_rules(rules)


def stop_container(lab: Lab, name: str, timeout: float = 10.0) -> int | None:
    """SIGTERM, SIGKILL after `timeout`; then release the container's endpoints.  Its exit code."""
    from runtime.errors import RuntimeErrorBase
    ct = _runtime_container(lab, name)
    with _locked(lab):
        running = [d for d in _dependents(lab, name) if _runtime_container(lab, d).status == "running"]
        if running:
            raise UsageError(f"container {', '.join(running)} uses {name}'s network namespace "
                             f"(network_mode container:{name}): stop {' and '.join(running)} first")
        try:
            code = ct.stop(timeout=timeout)
        except RuntimeErrorBase as e:
            raise LabError(f"container {name}: stop: {e}") from None
        current = current_addresses(lab)
        if current.get(name) is not None:
            _release(lab, name, current)
    return code


def _release(lab: Lab, name: str, current: dict[str, ContainerAddr | None]) -> None:
    current[name] = None
    save_addresses(lab.dir, current)
    _apply_rules(lab, current)                   # its published ports are withdrawn first, ...
    netns.remove(lab.names.container(name))      # ... then its namespace (and veths) go


def start_container(lab: Lab, name: str) -> ContainerAddr | None:
    """Start a stopped container again, on fresh endpoints; its addresses (None: no endpoints
    of its own)."""
    from runtime.errors import RuntimeErrorBase
    ct = _runtime_container(lab, name)
    with _locked(lab):
        if ct.status == "running":
            raise UsageError(f"container {name} is running (`netsim restart {lab.name} {name}` restarts it)")
        mode = lab.plan.modes.get(name)
        if mode is not None and mode.startswith("container:"):
            owner = mode.removeprefix("container:")
            if _runtime_container(lab, owner).status != "running":
                raise UsageError(f"container {name} uses {owner}'s network namespace: start {owner} first")
        current = current_addresses(lab)
        addr: ContainerAddr | None = None
        if current.get(name) is not None:   # it exited by itself: its endpoints go as on a stop
            _release(lab, name, current)
        if name in current:
            running = {n: a for n, a in current.items() if a is not None and n != name}
            try:
                addr = readdress(lab.plan, lab.scenario, name, running)
            except ValueError as e:
                raise LabError(str(e)) from None
            _wire(lab, addr)
            current[name] = addr
            save_addresses(lab.dir, current)
            _apply_rules(lab, current)
        try:
            ct.start()
        except RuntimeErrorBase as e:
            if addr is not None:     # nothing may hold an address for a container that is not running
                _release(lab, name, current)
            raise LabError(f"container {name}: start: {e}") from None
    return addr


def restart_container(lab: Lab, name: str, timeout: float = 10.0) -> ContainerAddr | None:
    """`docker restart`: stop (releasing the addresses), then start (allocating them again)."""
    stop_container(lab, name, timeout)
    return start_container(lab, name)


def _wire(lab: Lab, addr: ContainerAddr) -> None:
    """The container's network namespace again (recorded in the ledger first), its interfaces
    on their bridges with the new addresses and MACs, hairpin mode as the scenario says."""
    nets = list(lab.plan.networks.values())
    bridge = HostBridge(lab.names.host, nets[0].bridge, nets[0].gateway, nets[0].subnet.prefixlen, create=False)
    try:
        for n in nets[1:]:
            bridge.add_bridge(n.bridge, n.gateway, n.subnet.prefixlen, create=False)
        links = plan_links(replace(lab.plan, containers={addr.name: addr}), lab.names)
        bridge.wire_container(lab.names.container(addr.name), links, lab.ledger.record)
    except OSError as e:
        raise LabError(f"container {addr.name}: wiring: {e}") from None
    finally:
        bridge.close()
    lab.set_hairpin([e.veth for e in addr.endpoints])

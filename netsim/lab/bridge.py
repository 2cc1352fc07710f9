"""The bridge side of the own engine — what Docker's bridge driver does: docker0 in the host
namespace and, per container, a network namespace holding `eth0` whose veth peer sits on
docker0."""
from __future__ import annotations

from collections.abc import Callable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import LabError
from ..model.addressing import Plan
from . import netns
from .network import CONTAINER_SYSCTLS, QUIET, LabNames, idx, up

__all__ = ["build_bridge_side"]


def build_bridge_side(plan: Plan, names: LabNames, record: Callable[..., None]) -> None:
    """Create every container's network namespace (recorded first), docker0 and the veths."""
    for c in plan.containers:
        record("netns", names.container(c))
        netns.create(names.container(c))
    try:
        _build_bridge(plan, names)
    except NetlinkError as e:
        raise LabError(f"netlink: {e}") from None


def _build_bridge(plan: Plan, names: LabNames) -> None:
    prefix = plan.subnet.prefixlen
    with IPRoute(netns=names.host) as ipr:
        ipr.link("add", ifname=plan.bridge, kind="bridge")
        br = idx(ipr, plan.bridge)
        ipr.addr("add", index=br, address=str(plan.gateway), prefixlen=prefix)
        for c in plan.containers.values():
            ipr.link("add", ifname=c.veth, kind="veth",
                     peer={"ifname": c.ifname, "net_ns_fd": names.container(c.name)})
            up(ipr, c.veth, master=br)
        ipr.link("set", index=br, state="up")
    for c in plan.containers.values():
        with IPRoute(netns=names.container(c.name)) as ipr:
            up(ipr, "lo")
            e = idx(ipr, c.ifname)
            ipr.link("set", index=e, address=c.mac)
            ipr.addr("add", index=e, address=str(c.ip), prefixlen=prefix)
            ipr.link("set", index=e, state="up")
            ipr.route("add", dst="default", gateway=str(plan.gateway))
    netns.write_sysctls(names.host, QUIET)  # the new bridge and veths
    for cname in plan.containers:
        netns.write_sysctls(names.container(cname), {**QUIET, **CONTAINER_SYSCTLS})

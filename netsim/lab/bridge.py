"""The bridge side of the own engine — what Docker's bridge driver does: docker0 in the host
namespace and, per container, a network namespace holding `eth0` whose veth peer sits on
docker0.

Built for speed, without a fork or a subprocess per container:
- a container's network namespace is made by a worker *thread* (net namespaces are per thread):
  unshare(CLONE_NEWNET), bind /proc/thread-self/ns/net at /run/netns/NAME, configure it from
  inside, setns back;
- one raw rtnetlink socket opened in the host namespace creates each veth already on docker0,
  up, with its peer `eth0` (MAC set) placed straight into the container's namespace;
- inside the container namespace, one netlink send carries lo up, eth0's address, eth0 up and
  the default route (the kernel handles a multi-message buffer in order; the acks are read after);
- containers are wired on a small thread pool (the work is in system calls, which release the GIL).
"""
from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import LabError
from ..model.addressing import Plan
from . import netns
from .network import CONTAINER_SYSCTLS, QUIET, LabNames

__all__ = ["ContainerLink", "HostBridge", "build_bridge_side", "plan_links", "in_netns_thread", "new_container_netns", "wire_all"]

_CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_LIBC = ctypes.CDLL(None, use_errno=True)

# rtnetlink (linux/rtnetlink.h, if_link.h, veth.h)
_RTM_NEWLINK, _RTM_NEWADDR, _RTM_NEWROUTE = 16, 20, 24
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 1, 4, 0x200, 0x400
_NLMSG_ERROR = 2
_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MASTER, _IFLA_LINKINFO, _IFLA_NET_NS_FD = 1, 3, 10, 18, 28
_IFLA_INFO_KIND, _IFLA_INFO_DATA, _VETH_INFO_PEER = 1, 2, 1
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_RTA_GATEWAY = 5
_IFF_UP = 1
_NESTED = 0x8000


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _ifinfo(index: int = 0, up: bool = False) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, _IFF_UP if up else 0, _IFF_UP if up else 0)


class _Rtnl:
    """A raw NETLINK_ROUTE socket, bound to the network namespace of the thread that made it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self._seq = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self.sock.close()

    def request(self, *messages: tuple[int, int, bytes]) -> None:
        """Send (type, extra flags, body) messages in one buffer; raise on the first error ack."""
        with self._lock:
            buf, seqs = b"", []
            for kind, flags, body in messages:
                self._seq += 1
                seqs.append(self._seq)
                buf += struct.pack("=IHHII", 16 + len(body), kind, _NLM_F_REQUEST | _NLM_F_ACK | flags, self._seq, 0) + body
            self.sock.send(buf)
            pending = set(seqs)
            while pending:
                data = self.sock.recv(65536)
                off = 0
                while off + 16 <= len(data):
                    length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
                    if kind == _NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, off + 16)
                        pending.discard(seq)
                        if code:
                            raise OSError(-code, os.strerror(-code))
                    off += (length + 3) & ~3

    def add_bridge(self, name: str) -> None:
        info = _attr(_IFLA_LINKINFO | _NESTED, _attr(_IFLA_INFO_KIND, b"bridge"))
        self.request((_RTM_NEWLINK, _NLM_F_CREATE | _NLM_F_EXCL, _ifinfo() + _attr(_IFLA_IFNAME, name.encode() + b"\0") + info))

    def set_up(self, index: int) -> tuple[int, int, bytes]:
        return (_RTM_NEWLINK, 0, _ifinfo(index, up=True))

    def add_addr(self, index: int, ip: ipaddress.IPv4Address, prefix: int) -> tuple[int, int, bytes]:
        body = struct.pack("=BBBBI", socket.AF_INET, prefix, 0, 0, index) + _attr(_IFA_LOCAL, ip.packed) + _attr(_IFA_ADDRESS, ip.packed)
        return (_RTM_NEWADDR, _NLM_F_CREATE | _NLM_F_EXCL, body)

    def add_default_route(self, gateway: ipaddress.IPv4Address) -> tuple[int, int, bytes]:
        body = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 0) + _attr(_RTA_GATEWAY, gateway.packed)
        return (_RTM_NEWROUTE, _NLM_F_CREATE | _NLM_F_EXCL, body)

    def add_veth(self, host_name: str, master: int, peer_name: str, peer_netns_fd: int, peer_mac: str) -> None:
        """A veth `host_name` (enslaved to `master`, up) whose peer is born in another namespace."""
        peer = (_ifinfo() + _attr(_IFLA_IFNAME, peer_name.encode() + b"\0")
                + _attr(_IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
                + _attr(_IFLA_ADDRESS, bytes.fromhex(peer_mac.replace(":", ""))))  # fmt: skip
        info = _attr(_IFLA_LINKINFO | _NESTED, _attr(_IFLA_INFO_KIND, b"veth")
                     + _attr(_IFLA_INFO_DATA | _NESTED, _attr(_VETH_INFO_PEER | _NESTED, peer)))  # fmt: skip
        body = _ifinfo(up=True) + _attr(_IFLA_IFNAME, host_name.encode() + b"\0") + _attr(_IFLA_MASTER, struct.pack("=I", master)) + info
        self.request((_RTM_NEWLINK, _NLM_F_CREATE | _NLM_F_EXCL, body))


@contextmanager
def in_netns_thread(path: str | None) -> Iterator[None]:
    """Run the body with the *calling thread* in the network namespace at `path` (a new, unnamed
    one when None), and move it back afterwards. Other threads are not affected."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if path is None:
            if _LIBC.unshare(_CLONE_NEWNET) != 0:
                raise LabError(f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}")
        else:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _LIBC.setns(fd, _CLONE_NEWNET) != 0:
                    raise LabError(f"setns({path}): {os.strerror(ctypes.get_errno())}")
            finally:
                os.close(fd)
        yield
    finally:
        if _LIBC.setns(home, _CLONE_NEWNET) != 0:  # pragma: no cover - would leave the thread astray
            os.close(home)
            raise SystemExit(f"cannot return to the original network namespace: {os.strerror(ctypes.get_errno())}")
        os.close(home)


def _write_sysctls(values: Mapping[str, str]) -> None:
    """net.* sysctls of the calling thread's network namespace."""
    for key, value in values.items():
        fd = os.open("/proc/sys/" + key.replace(".", "/"), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)


@dataclass(frozen=True)
class ContainerLink:
    """What one container's eth0 gets."""

    netns_name: str
    veth: str
    ifname: str
    mac: str
    ip: ipaddress.IPv4Address
    prefix: int
    gateway: ipaddress.IPv4Address | None      # the default route's gateway; None: no default route
    bridge: str | None = None                  # None: the HostBridge's first bridge


class HostBridge:
    """docker0 (and any further bridges, `add_bridge`) in a host namespace and a netlink socket
    there, shared by the worker threads."""

    def __init__(self, host_netns: str, bridge: str, gateway: ipaddress.IPv4Address, prefix: int,
                 create: bool = True) -> None:
        self.host_netns = host_netns
        self.indexes: dict[str, int] = {}
        with in_netns_thread(netns.netns_path(host_netns)):
            self._rtnl = _Rtnl()
        try:
            self.bridge_index = self.add_bridge(bridge, gateway, prefix, create)
        except LabError:
            self._rtnl.close()
            raise

    def add_bridge(self, bridge: str, gateway: ipaddress.IPv4Address, prefix: int, create: bool = True) -> int:
        """Create a bridge (its address = the gateway, up) and remember its index."""
        with in_netns_thread(netns.netns_path(self.host_netns)):
            try:
                if create:
                    self._rtnl.add_bridge(bridge)
                index = socket.if_nametoindex(bridge)
                if create:
                    self._rtnl.request(self._rtnl.add_addr(index, gateway, prefix), self._rtnl.set_up(index))
            except OSError as e:
                raise LabError(f"netns {self.host_netns}: bridge {bridge}: {e.strerror}") from None
        self.indexes[bridge] = index
        return index

    def close(self) -> None:
        self._rtnl.close()

    def wire(self, link: ContainerLink, record: Callable[..., None] | None = None) -> None:
        """Create the container's network namespace (recorded first) with eth0 on the bridge."""
        self.wire_container(link.netns_name, [link], record)

    def wire_container(self, netns_name: str, links: list[ContainerLink],
                       record: Callable[..., None] | None = None) -> None:
        """Create a container's network namespace (recorded first) with one interface per link
        (eth0, eth1, ...), each on its bridge."""
        def attach(fd: int) -> None:
            for link in links:
                self._attach(link, fd)
        new_container_netns(netns_name, record, attach)

    def _attach(self, link: ContainerLink, fd: int) -> None:
        master = self.bridge_index if link.bridge is None else self.indexes[link.bridge]
        try:
            self._rtnl.add_veth(link.veth, master, link.ifname, fd, link.mac)
        except OSError as e:
            raise LabError(f"veth {link.veth} -> {link.netns_name}: {e.strerror}") from None
        # back in the container's namespace (the caller's thread is there)
        inner = _Rtnl()
        try:
            eth = socket.if_nametoindex(link.ifname)
            msgs = [inner.set_up(1), inner.add_addr(eth, link.ip, link.prefix), inner.set_up(eth)]
            if link.gateway is not None:
                msgs.append(inner.add_default_route(link.gateway))
            inner.request(*msgs)
        except OSError as e:
            raise LabError(f"netns {link.netns_name}: {link.ifname} {link.ip}: {e.strerror}") from None
        finally:
            inner.close()


def _lo_up(_fd: int) -> None:
    inner = _Rtnl()
    try:
        inner.request(inner.set_up(1))
    finally:
        inner.close()


def new_container_netns(name: str, record: Callable[..., None] | None,
                        then: Callable[[int], None] | None = None) -> None:
    """A named network namespace at /run/netns/NAME, made by this thread (no fork): lo up, IPv6
    off, Docker's container sysctls; `then(fd)` runs with the thread still inside it."""
    if record is not None:
        record("netns", name)
    if netns.exists(name):
        raise LabError(f"network namespace {name} already exists: is a lab of the same name running? "
                       "(`netsim ps`, `netsim down LAB`)")
    target = netns.NETNS_DIR / name
    netns.NETNS_DIR.mkdir(parents=True, exist_ok=True)
    os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    try:
        with in_netns_thread(None):
            if _LIBC.mount(b"/proc/thread-self/ns/net", str(target).encode(), b"none", _MS_BIND, None) != 0:
                err = ctypes.get_errno()
                raise LabError(f"cannot bind network namespace {name}: {os.strerror(err)}")
            _write_sysctls({**QUIET, **CONTAINER_SYSCTLS})
            if then is not None:
                fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    then(fd)
                finally:
                    os.close(fd)
    except BaseException:
        try:
            netns.remove(name)
        except LabError:
            pass
        raise


def wire_all(bridge: HostBridge, links: list[ContainerLink], record: Callable[..., None] | None,
             workers: int = 4) -> None:
    """Wire every container (its links grouped by namespace, in order) on a thread pool; the
    first error is raised after all finished."""
    groups: dict[str, list[ContainerLink]] = {}
    for link in links:
        groups.setdefault(link.netns_name, []).append(link)
    if len(groups) <= 1 or workers <= 1:
        for ns_name, group in groups.items():
            bridge.wire_container(ns_name, group, record)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="netsim-wire") as pool:
        futures = [pool.submit(bridge.wire_container, ns_name, group, record) for ns_name, group in groups.items()]
        errors = [f.exception() for f in futures]
    for e in errors:
        if e is not None:
            raise e


def plan_links(plan: Plan, names: LabNames) -> list[ContainerLink]:
    """Every container interface of the plan: eth0, eth1, ... on their networks' bridges; the
    default route only by the gateway network (none on internal networks), as Docker does."""
    links: list[ContainerLink] = []
    for c in plan.containers.values():
        for e in c.endpoints:
            net = plan.networks[e.network]
            links.append(ContainerLink(names.container(c.name), e.veth, e.ifname, e.mac, e.ip, net.subnet.prefixlen,
                                       net.gateway if e.network == c.gateway_network else None, net.bridge))
    return links


def build_bridge_side(plan: Plan, names: LabNames, record: Callable[..., None]) -> None:
    """Create every network's bridge (docker0 first), every container's network namespace
    (recorded first) and the veths; a `network_mode: none` container gets a namespace with lo only."""
    nets = list(plan.networks.values())
    first = nets[0] if nets else None
    bridge = HostBridge(names.host, first.bridge if first else plan.bridge, first.gateway if first else plan.gateway,
                        first.subnet.prefixlen if first else plan.subnet.prefixlen)
    try:
        for n in nets[1:]:
            bridge.add_bridge(n.bridge, n.gateway, n.subnet.prefixlen)
        wire_all(bridge, plan_links(plan, names), record)
        for name, mode in plan.modes.items():
            if mode == "none":
                new_container_netns(names.container(name), record, _lo_up)
    except OSError as e:
        raise LabError(f"bridge side: {e}") from None
    finally:
        bridge.close()

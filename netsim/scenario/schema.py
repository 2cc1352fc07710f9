"""The scenario file's schema (pydantic).  Pure: no I/O, no kernel.

A scenario names containers on the docker0 bridge, external hosts beyond the host's NIC, the
steps of traffic to run and what each step is expected to show about NAT.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

__all__ = [
    "Scenario", "Container", "External", "Service", "Publish", "Limits", "Step", "Expect",
    "HostConfig", "Nic", "Bridge", "Upstream", "Link", "Network", "NAME_RE", "NETWORK_RE", "SEND_KINDS",
    "DEFAULT_NETWORK", "time_ms",
]

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}$")
NETWORK_RE = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
DEFAULT_NETWORK = "bridge"     # Docker's default network: the host's docker0 (host.bridge)
SEND_KINDS = ("http_get", "tcp_connect", "udp", "ping")
_SIZE_RE = re.compile(r"^(\d+)([kmg]?)b?$", re.I)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(v: str) -> str:
    if not NAME_RE.match(v):
        raise ValueError(f"{v!r} is not a valid name (lower-case letters, digits and '-', "
                         "starting with a letter, at most 15 characters)")
    if v in ("host", "gateway", "router"):
        raise ValueError(f"{v!r} is reserved: it names the Docker host's NIC, the bridge gateway or "
                         "the home router's public address")
    return v


Name = Annotated[str, BeforeValidator(lambda v: v if not isinstance(v, str) else v.strip())]


class Nic(_Strict):
    """The Docker host's NIC (`eth0` in the host namespace) and its upstream gateway."""

    name: str = "eth0"
    address: ipaddress.IPv4Interface = ipaddress.IPv4Interface("203.0.113.2/24")
    gateway: ipaddress.IPv4Address = ipaddress.IPv4Address("203.0.113.1")


class Bridge(_Strict):
    name: str = "docker0"
    subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("172.17.0.0/16")
    gateway: ipaddress.IPv4Address | None = None  # default: first address of the subnet


class HostConfig(_Strict):
    """The Docker host.  netsim does NAT in the kernel only, as Docker with
    `--userland-proxy=false` (no docker-proxy process)."""

    nic: Nic = Nic()
    bridge: Bridge = Bridge()
    masquerade: bool = True
    hairpin_mode: bool = Field(default=True, description="bridge ports in hairpin mode (Docker sets it "
                               "with userland-proxy=false): a container can reach its own published port")
    bridge_nf_call_iptables: bool = Field(default=True, description="bridged traffic passes iptables and "
                                          "conntrack (br_netfilter), as Docker requires")
    userns: bool = Field(default=True, description="containers in a user namespace (root inside is uid "
                         "100000 outside); false is Docker's default (no userns-remap), where busybox's "
                         "raw-socket ping works")


class Upstream(_Strict):
    """What is beyond the NIC.

    `isp`: the NIC's gateway is an ISP router that routes to the external hosts' subnet.
    `home-router`: the NIC sits on a home LAN (`lan`, default 192.168.0.0/24: router .1, Docker
    host .2) behind a router that NAPTs again out of its public address `wan` — double NAT, as
    the seed's router example.  External hosts whose address is in `lan` are LAN hosts sharing
    the router; the others are on the internet side (`subnet`)."""

    kind: Literal["isp", "home-router"] = "isp"
    subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("198.51.100.0/24")
    lan: ipaddress.IPv4Network = ipaddress.IPv4Network("192.168.0.0/24")
    wan: ipaddress.IPv4Interface = ipaddress.IPv4Interface("203.0.113.2/24")


class Service(_Strict):
    kind: Literal["http", "tcp_echo", "udp_echo"]
    port: int = Field(ge=1, le=65535)


class Limits(_Strict):
    memory: str | None = None   # "64m", "1g", bytes
    pids: int | None = Field(default=None, ge=1)
    cpus: float | None = Field(default=None, gt=0)

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        if v is not None and not _SIZE_RE.match(str(v)):
            raise ValueError(f"{v!r} is not a size like 64m, 512k or 1g")
        return v

    @property
    def memory_bytes(self) -> int | None:
        if self.memory is None:
            return None
        m = _SIZE_RE.match(str(self.memory))
        assert m
        return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


class Publish(_Strict):
    """`[HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/tcp|/udp]`, as `docker run -p`."""

    host_ip: ipaddress.IPv4Address | None = None
    host_port: int = Field(ge=1, le=65535)
    container_port: int = Field(ge=1, le=65535)
    count: int = Field(default=1, ge=1, le=1000, description="ports in the range")
    proto: Literal["tcp", "udp"] = "tcp"

    @classmethod
    def parse(cls, text: str) -> "Publish":
        m = re.fullmatch(r"(?:(\d+\.\d+\.\d+\.\d+):)?(\d+)(?:-(\d+))?:(\d+)(?:-(\d+))?(?:/(tcp|udp))?",
                         str(text).strip())
        if not m:
            raise ValueError(f"{text!r} is not [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/tcp|/udp]")
        hip, hp, hend, cp, cend, proto = m.groups()
        n_host = int(hend) - int(hp) + 1 if hend else 1
        n_cont = int(cend) - int(cp) + 1 if cend else 1
        if n_host < 1 or n_cont < 1:
            raise ValueError(f"{text!r}: a range must not end before it starts")
        if n_host != n_cont:
            raise ValueError(f"{text!r}: the host range has {n_host} ports, the container range {n_cont}")
        if int(hp) + n_host - 1 > 65535 or int(cp) + n_cont - 1 > 65535:
            raise ValueError(f"{text!r}: ports go up to 65535")
        return cls(host_ip=ipaddress.IPv4Address(hip) if hip else None, host_port=int(hp),
                   container_port=int(cp), count=n_host, proto=proto or "tcp")  # type: ignore[arg-type]

    def pairs(self) -> list[tuple[int, int]]:
        """(host port, container port) for every port of the range."""
        return [(self.host_port + i, self.container_port + i) for i in range(self.count)]


def _parse_publish(v: object) -> object:
    if isinstance(v, (str, int)):
        return Publish.parse(str(v))
    return v


def _check_network_name(v: object) -> object:
    if isinstance(v, str):
        v = v.strip()
        if not NETWORK_RE.match(v):
            raise ValueError(f"{v!r} is not a valid network name (lower-case letters, digits, '-' and '_', "
                             "starting with a letter, at most 31 characters)")
    return v


class Network(_Strict):
    """A user-defined bridge network, as `docker network create` makes it: its own bridge,
    subnet and gateway, isolated from the other networks; `internal` has no way out (no
    MASQUERADE, no default route in its containers)."""

    name: Annotated[str, BeforeValidator(_check_network_name)]
    subnet: ipaddress.IPv4Network | None = Field(
        default=None, description="default: the next free 172.N.0.0/16 from 172.18 up, as Docker's default pool")
    gateway: ipaddress.IPv4Address | None = Field(default=None, description="default: the subnet's first host")
    bridge: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$",
                               description="the bridge's name (default br- + 12 hex digits, as Docker's)")
    internal: bool = False


class Container(_Strict):
    name: Annotated[Name, BeforeValidator(_check_name)]
    image: str = Field(default="busybox", pattern=r"^(busybox|host|oci:.+)$",
                       description="busybox (from the host's busybox-static), host (the host's /usr "
                       "read-only: python3 inside), or oci:PATH (a docker-save tarball or OCI layout)")
    cap_add: list[str] = Field(default_factory=list, description="capabilities added to Docker's default set")
    cap_drop: list[str] = Field(default_factory=list, description="capabilities removed (ALL for every one)")
    command: list[str] = Field(default_factory=lambda: ["sleep", "3600"], min_length=1)
    files: dict[str, str] = Field(default_factory=dict)
    publish: list[Annotated[Publish, BeforeValidator(_parse_publish)]] = Field(default_factory=list)
    ip: ipaddress.IPv4Address | None = Field(default=None, description="fixed address on the first network")
    networks: list[Annotated[str, BeforeValidator(_check_network_name)]] | None = Field(
        default=None, description="networks joined in order (eth0, eth1, ...); default [bridge], the "
        "default network on docker0")
    network_mode: str | None = Field(
        default=None, pattern=r"^(host|none|container:[a-z][a-z0-9-]{0,14})$",
        description="host (the Docker host's network namespace), none (only lo) or container:NAME "
        "(NAME's network namespace); excludes networks, publish and ip")
    limits: Limits = Limits()
    ready_port: int | None = Field(default=None, ge=1, le=65535,
                                   description="wait until this TCP port listens before the steps")


class External(_Strict):
    name: Annotated[Name, BeforeValidator(_check_name)]
    address: ipaddress.IPv4Address
    services: list[Service] = Field(default_factory=list)


class Expect(_Strict):
    """What a step must show.  Endpoints are `NAME[:PORT]` (NAME a container, an external host
    or `host` = the NIC address) or `IP[:PORT]`."""

    reply: bool | None = None
    snat: str | None = Field(default=None, description="source seen beyond the NIC")
    dnat: str | None = Field(default=None, description="destination the container receives")
    server_sees: str | None = Field(default=None, description="source address:port at the receiver")


class Step(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    from_: str = Field(alias="from")
    send: Literal["http_get", "tcp_connect", "udp", "ping"]
    to: str
    sport: int | None = Field(default=None, ge=1, le=65535)
    count: int = Field(default=1, ge=1, le=100000)
    payload: str = "netsim"
    timeout: float = Field(default=5.0, gt=0, le=300)
    expect: Expect = Expect()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


_RATE_RE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$")
_TIME_RE = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)$")


def time_ms(value: str) -> float:
    """A link time as the schema accepts it (`20ms`, `500us`, `1s`) in milliseconds."""
    m = _TIME_RE.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not a time like 20ms, 500us, 1s")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


class Link(_Strict):
    """Impairments on one link, applied at its egress (as tc qdiscs are).  `at`: `nic` (the
    Docker host's uplink, both ways), `wan` (the home router's public side) or a container's
    name (its eth0).  `rate` uses tc tbf; `loss` drops at random (iptables statistic); `delay`
    and `jitter` use tc netem, or netsim's netfilter-queue delayer where the kernel has no
    sch_netem."""

    at: str
    rate: str | None = Field(default=None, description="e.g. 10mbit, 512kbit")
    loss: float | None = Field(default=None, ge=0, le=100, description="percent of packets dropped")
    delay: str | None = Field(default=None, description="e.g. 20ms, each way")
    jitter: str | None = Field(default=None, description="e.g. 5ms: delay ± jitter, uniform (needs delay)")

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is not None and not _RATE_RE.match(v):
            raise ValueError(f"{v!r} is not a rate like 10mbit, 512kbit, 1gbit")
        return v

    @field_validator("delay", "jitter")
    @classmethod
    def _time(cls, v: str | None) -> str | None:
        if v is not None:
            time_ms(v)   # raises ValueError naming the value
        return v


class Scenario(_Strict):
    name: Annotated[str, BeforeValidator(lambda v: v)]
    description: str = ""
    host: HostConfig = HostConfig()
    upstream: Upstream = Upstream()
    networks: list[Network] = Field(default_factory=list, description="user-defined bridge networks")
    containers: list[Container] = Field(default_factory=list)
    externals: list[External] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _lab_name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,31}", v):
            raise ValueError(f"{v!r} is not a valid scenario name (lower-case letters, digits, '-')")
        return v

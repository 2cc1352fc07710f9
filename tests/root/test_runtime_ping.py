"""Ping from a container. Raw ICMP (busybox ping) needs NET_RAW over the netns: it works without
a user namespace (Docker's default); under one, the netns belongs to the host's user namespace and
the container's NET_RAW does not count, but ICMP echo sockets (SOCK_DGRAM, allowed for every group
by the runtime's default net.ipv4.ping_group_range, as Docker sets it) work either way."""
from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import test_runtime_isolation as iso

from runtime import Container

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates namespaces, mounts and cgroups"),
]

cgroup_parent, host_unchanged, ledger, make, rt, runtime_dirs = (
    iso.cgroup_parent, iso.host_unchanged, iso.ledger, iso.make, iso.rt, iso.runtime_dirs)

ECHO = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); s.settimeout(2); "
        "s.sendto(b'\\x08\\0\\0\\0\\0\\1\\0\\1', ('127.0.0.1', 0)); print(s.recvfrom(64)[0][0])")  # fmt: skip


def test_busybox_ping_without_user_namespace(make: Callable[..., Container]) -> None:
    c = make("sleep", "1000", idmap=None)
    res = c.exec(["ping", "-c", "1", "-W", "2", "127.0.0.1"])
    assert res.returncode == 0 and "1 packets received" in res.stdout, res


def test_user_namespace_raw_ping_refused_echo_socket_works(make: Callable[..., Container]) -> None:
    c = make("sleep", "1000", image="host")
    assert "permission denied" in c.exec(["busybox", "ping", "-c", "1", "127.0.0.1"]).stderr
    res = c.exec(["python3", "-c", ECHO])
    assert res.returncode == 0 and res.stdout == "0\n", res  # an echo reply (type 0)

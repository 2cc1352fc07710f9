"""Docker's default hardening, observed from inside real containers: capabilities, no_new_privs,
masked and read-only /proc and /sys paths, a minimal /dev, and the devices cgroup.

Fixtures (unique cgroup parents, containers deleted after each test, host unchanged) come from
test_runtime_isolation.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import pytest
import test_runtime_isolation as iso

from runtime import Container
from runtime.caps import DOCKER_DEFAULT_CAPS, cap_mask
from runtime.cgroups import detect_layout
from runtime.rootfs import MASKED_PATHS, READONLY_PATHS

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates namespaces, mounts and cgroups"),
]

# the fixtures of test_runtime_isolation, under the same names
cgroup_parent, host_unchanged, ledger, make, rt, runtime_dirs = (
    iso.cgroup_parent, iso.host_unchanged, iso.ledger, iso.make, iso.rt, iso.runtime_dirs)
sh, poll = iso.sh, iso.poll

DOCKER_CAPEFF = "00000000a80425fb"  # CapEff of a process in `docker run busybox`


def _status(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def test_docker_default_capability_mask() -> None:
    assert f"{cap_mask(DOCKER_DEFAULT_CAPS):016x}" == DOCKER_CAPEFF


def test_exec_and_main_process_have_docker_caps_and_no_new_privs(make: Callable[..., Container]) -> None:
    c = make("sh", "-c", "cat /proc/self/status; sleep 1000")
    for status in (_status(sh(c, "cat /proc/self/status")), _status(sh(c, "cat /proc/1/status"))):
        assert status["CapEff"] == DOCKER_CAPEFF
        assert status["CapPrm"] == DOCKER_CAPEFF
        assert status["CapBnd"] == DOCKER_CAPEFF
        assert status["CapInh"] == "0000000000000000"
        assert status["CapAmb"] == "0000000000000000"
        assert status["NoNewPrivs"] == "1"
    assert poll(lambda: "CapEff" in c.log_paths[0].read_text())
    main = _status(c.log_paths[0].read_text())
    assert main["CapEff"] == DOCKER_CAPEFF and main["NoNewPrivs"] == "1"
    # what the missing capabilities forbid
    assert c.exec(["ip", "link", "add", "d0", "type", "dummy"]).returncode != 0  # NET_ADMIN
    assert c.exec(["mount", "-t", "tmpfs", "t", "/mnt"]).returncode != 0  # SYS_ADMIN
    assert c.exec(["hostname", "x"]).returncode != 0  # SYS_ADMIN
    assert c.exec(["chroot", "/", "true"]).returncode == 0  # SYS_CHROOT is kept


def test_same_caps_without_user_namespace(make: Callable[..., Container]) -> None:
    c = make(idmap=None)
    status = _status(sh(c, "cat /proc/self/status"))
    assert status["Uid"].split()[0] == "0"
    assert status["CapEff"] == DOCKER_CAPEFF and status["CapBnd"] == DOCKER_CAPEFF
    assert status["NoNewPrivs"] == "1"
    assert c.exec(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"]).returncode != 0


def test_proc_paths_masked_and_read_only(make: Callable[..., Container]) -> None:
    c = make()
    present = ["/" + p for p in MASKED_PATHS if p.startswith("proc/") and os.path.exists("/" + p)]
    assert "/proc/keys" in present and "/proc/timer_list" in present  # (this kernel has no kcore)
    mounted = {ln.split()[4] for ln in sh(c, "cat /proc/self/mountinfo").splitlines()}
    for path in present:
        assert path in mounted, path
        if os.path.isdir(path):
            assert sh(c, f"ls -A {path}").strip() == "", path
        else:
            assert sh(c, f"wc -c < {path}").strip() == "0", path
    assert {"/" + p for p in READONLY_PATHS if os.path.exists("/" + p)} <= mounted
    assert "/proc/sys" in mounted
    for script in ("echo 1 > /proc/sys/net/ipv4/ip_forward", "echo 1 > /proc/sys/kernel/domainname",
                   "echo 60 > /proc/sys/vm/swappiness"):  # fmt: skip
        res = c.exec(["sh", "-c", script])
        assert res.returncode != 0 and "Read-only file system" in res.stderr, (script, res)


def test_sys_is_read_only_and_shows_only_the_containers_interfaces(make: Callable[..., Container]) -> None:
    c = make(capabilities=(*DOCKER_DEFAULT_CAPS, "SYS_ADMIN"))  # even with SYS_ADMIN
    assert sh(c, "ls /sys/class/net").split() == ["lo"]
    res = c.exec(["sh", "-c", "echo 1400 > /sys/class/net/lo/mtu"])
    assert res.returncode != 0 and "Read-only file system" in res.stderr, res
    assert c.exec(["mount", "-o", "remount,rw", "/sys"]).returncode != 0  # locked read-only
    assert c.exec(["umount", "/sys"]).returncode != 0  # locked: cannot reveal what is below
    assert sh(c, "ls -A /sys/firmware").strip() == ""
    line = next(ln for ln in sh(c, "cat /proc/self/mountinfo").splitlines() if ln.split()[4] == "/sys")
    assert "ro" in line.split()[5].split(",")


def test_dev_is_minimal(make: Callable[..., Container]) -> None:
    c = make()
    assert sorted(sh(c, "ls -A /dev").split()) == sorted(
        ["fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
         "urandom", "zero"])  # fmt: skip
    assert sh(c, "head -c 4 /dev/urandom | wc -c; head -c 3 /dev/zero | wc -c").split() == ["4", "3"]
    assert sh(c, "echo x > /dev/null && echo ok").strip() == "ok"


@pytest.mark.skipif(detect_layout().version != 1 or "devices" not in detect_layout().mounts,
                    reason="the devices controller of cgroup v1")  # fmt: skip
def test_devices_cgroup_denies_disks_even_to_real_root(make: Callable[..., Container]) -> None:
    c = make(idmap=None)  # container root is host root (uid 0) with CAP_MKNOD: only the cgroup stops it
    devices_dir = next(p for p in c.cgroup_paths if "/devices/" in p)
    allowed = open(os.path.join(devices_dir, "devices.list")).read().split("\n")
    assert "a *:* rwm" not in allowed and "c 1:3 rwm" in allowed and not any(ln.startswith("b") for ln in allowed)
    res = c.exec(["mknod", "/dev/sda", "b", "8", "0"])
    assert res.returncode != 0 and "Operation not permitted" in res.stderr, res
    # a disk node made from the host side: opening it inside fails on the cgroup check
    name = f"disk-{uuid.uuid4().hex[:6]}"
    os.mknod(f"/proc/{c.pid}/root/dev/{name}", 0o600 | 0o060000, os.makedev(8, 0))
    res = c.exec(["dd", f"if=/dev/{name}", "of=/dev/null", "bs=512", "count=1"])
    assert res.returncode != 0 and "Operation not permitted" in res.stderr, res
    assert sh(c, "head -c 1 /dev/zero | wc -c").strip() == "1"  # allowed devices still work

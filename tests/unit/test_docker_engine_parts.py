"""The docker engine's pure parts: what Docker's default bridge can express, the busybox
tarball it imports, and the lab-named cgroup subtrees it tracks (no root, no dockerd)."""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from netsim.errors import UsageError
from netsim.lab.cgroup_tree import hierarchies
from netsim.lab.engines import make_engine
from netsim.lab.engines.docker import DockerEngine, _busybox_tar
from netsim.lab.lab import Lab
from netsim.scenario import parse_scenario

ROOT = Path(__file__).resolve().parents[2]


def _lab(text: str, tmp_path: Path) -> Lab:
    return Lab(parse_scenario(text, "t.yaml"), name="t", state_root=tmp_path)


def test_factory_makes_a_docker_engine_with_the_proxy_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETSIM_DOCKER_USERLAND_PROXY", raising=False)
    e = make_engine("docker")
    assert isinstance(e, DockerEngine) and e.name == "docker" and e.userland_proxy is False
    monkeypatch.setenv("NETSIM_DOCKER_USERLAND_PROXY", "1")
    assert DockerEngine().userland_proxy is True


def test_napt_basic_is_expressible(tmp_path: Path) -> None:
    DockerEngine.check_expressible(_lab((ROOT / "scenarios" / "napt-basic.yaml").read_text(), tmp_path))


def test_what_the_default_bridge_cannot_express_is_a_usage_error(tmp_path: Path) -> None:
    text = """
name: x
host: {bridge: {name: br-lab}}
containers:
  - {name: web, ip: 172.17.0.9}
"""
    with pytest.raises(UsageError) as e:
        DockerEngine.check_expressible(_lab(text, tmp_path))
    assert e.value.exit_code == 2
    assert "br-lab" in str(e.value) and "container web asks for a fixed ip" in str(e.value)


@pytest.mark.skipif(not os.access("/bin/busybox", os.X_OK), reason="needs /bin/busybox (busybox-static)")
def test_busybox_tarball(tmp_path: Path) -> None:
    _busybox_tar(tmp_path / "bb.tar")
    with tarfile.open(tmp_path / "bb.tar") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].isreg() and members["bin/busybox"].mode == 0o755
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "/bin/busybox"
    assert any(n.endswith("bin/wget") for n in members) and "etc/passwd" in members
    assert all(m.uid == 0 for m in members.values())


def test_cgroup_hierarchies_from_mountinfo(tmp_path: Path) -> None:
    mi = tmp_path / "mountinfo"
    mi.write_text(
        "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "31 25 0:27 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
        "32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
        "40 22 0:26 /x /mnt/x rw - cgroup cgroup rw,memory\n"        # a bind of a sub-cgroup
        "41 22 0:50 / /proc rw - proc proc rw\n")
    assert hierarchies(str(mi)) == [Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup/pids"),
                                    Path("/sys/fs/cgroup/unified")]


@pytest.mark.parametrize("name", ["networks", "two-networks", "internal-network", "network-modes", "publish",
                                  "hairpin", "double-nat"])
def test_regression_scenarios_are_expressible(name: str, tmp_path: Path) -> None:
    DockerEngine.check_expressible(_lab((ROOT / "scenarios" / "regression" / f"{name}.yaml").read_text(), tmp_path))


def test_a_fixed_ip_is_fine_on_a_user_defined_network_first_joined(tmp_path: Path) -> None:
    text = """
name: x
networks: [{name: front, subnet: 10.1.0.0/24}]
containers:
  - {name: web, networks: [front], ip: 10.1.0.9}
  - {name: other, networks: [front, bridge]}
"""
    DockerEngine.check_expressible(_lab(text, tmp_path))


def test_a_fixed_ip_the_model_reserves_ahead_of_dockers_ipam_is_refused(tmp_path: Path) -> None:
    """Docker reserves a --ip only when its container is created: an earlier container on the
    same network takes the lowest free address, which the model keeps for the fixed one."""
    text = """
name: x
networks: [{name: front, subnet: 10.1.0.0/24}]
containers:
  - {name: early, networks: [front]}
  - {name: web, networks: [front], ip: 10.1.0.2}
"""
    with pytest.raises(UsageError) as e:
        DockerEngine.check_expressible(_lab(text, tmp_path))
    assert "container early would get 10.1.0.2 on front from Docker's IPAM, the model gives it 10.1.0.3" in str(e.value)

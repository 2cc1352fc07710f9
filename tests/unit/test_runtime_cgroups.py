"""cgroup layout detection and path arithmetic (no root: reads text files only)."""
from __future__ import annotations

from pathlib import Path

import pytest

from runtime.cgroups import CgroupLayout, CgroupV1, CgroupV2, container_cgroup, detect_layout
from runtime.errors import CgroupError

V1_SPLIT = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

V1_JOINT = """\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory
27 24 0:24 / /sys/fs/cgroup/pids rw,nosuid shared:11 - cgroup cgroup rw,pids
"""


def _layout(tmp_path: Path, mountinfo: str) -> CgroupLayout:
    path = tmp_path / "mountinfo"
    path.write_text(mountinfo)
    return detect_layout(root=str(tmp_path / "no-v2-here"), mountinfo=str(path))


def test_v1_one_hierarchy_per_controller(tmp_path: Path) -> None:
    layout = _layout(tmp_path, V1_SPLIT)
    assert layout.version == 1
    assert dict(layout.mounts) == {
        "cpu": "/sys/fs/cgroup/cpu",
        "cpuacct": "/sys/fs/cgroup/cpuacct",
        "memory": "/sys/fs/cgroup/memory",
        "pids": "/sys/fs/cgroup/pids",
    }
    cg = container_cgroup(layout, "netsim/lab1", "web")
    assert isinstance(cg, CgroupV1)
    assert cg.paths == [
        "/sys/fs/cgroup/cpu/netsim/lab1/web",
        "/sys/fs/cgroup/cpuacct/netsim/lab1/web",
        "/sys/fs/cgroup/memory/netsim/lab1/web",
        "/sys/fs/cgroup/pids/netsim/lab1/web",
    ]


def test_v1_joint_cpu_cpuacct_is_one_directory(tmp_path: Path) -> None:
    layout = _layout(tmp_path, V1_JOINT)
    cg = container_cgroup(layout, "netsim", "c1")
    assert cg.dirs["cpu"] == cg.dirs["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/netsim/c1"
    assert len(cg.paths) == 3
    assert cg.procs_files[0].endswith("/netsim/c1/cgroup.procs")


def test_v1_missing_controller_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match="memory"):
        _layout(tmp_path, "\n".join(line for line in V1_SPLIT.splitlines() if "memory" not in line))


def test_v2_when_cgroup_controllers_exists(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    layout = detect_layout(root=str(tmp_path), mountinfo="/nonexistent")
    assert layout.version == 2
    cg = container_cgroup(layout, "netsim/lab1/", "web")
    assert isinstance(cg, CgroupV2)
    assert cg.paths == [str(tmp_path / "netsim/lab1/web")]

"""ContainerSpec validation (no root, no kernel objects)."""
from __future__ import annotations

import json

import pytest

from runtime import ContainerSpec, IdMap, Limits, SpecError
from runtime.spec import DEFAULT_PATH, container_env, spec_from_dict, spec_to_dict


@pytest.mark.parametrize(
    "name",
    ["", "-lead", ".hidden", "_x", "a/b", "a b", "../up", "x" * 65, "tab\t", "ü"],
)
def test_bad_names_raise_spec_error(name: str) -> None:
    with pytest.raises(SpecError, match="name"):
        ContainerSpec(name=name, argv=("true",))


@pytest.mark.parametrize("name", ["web", "c1", "lab1-c-web", "a.b_c-d", "A9", "x" * 64])
def test_good_names(name: str) -> None:
    assert ContainerSpec(name=name, argv=("true",)).name == name


@pytest.mark.parametrize("argv", [(), ("",), "sh -c true", ("ok", 3), ("nul\0",)])
def test_bad_argv(argv: object) -> None:
    with pytest.raises(SpecError, match="argv"):
        ContainerSpec(name="c", argv=argv)  # type: ignore[arg-type]


def test_argv_list_becomes_tuple() -> None:
    spec = ContainerSpec(name="c", argv=["sleep", "1"])  # type: ignore[arg-type]
    assert spec.argv == ("sleep", "1")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image": "ubuntu"}, "image"),
        ({"hostname": "bad host"}, "hostname"),
        ({"hostname": "-lead"}, "hostname"),
        ({"hostname": "h" * 65}, "hostname"),
        ({"workdir": "relative"}, "workdir"),
        ({"workdir": "/a/../b"}, "workdir"),
        ({"netns": "run/netns/x"}, "netns"),
        ({"env": {"A=B": "x"}}, "env"),
        ({"env": {"A": 1}}, "env"),
        ({"sysctls": {"kernel.pid_max": "1"}}, "sysctl"),
        ({"sysctls": {"net.ipv4..x": "1"}}, "sysctl"),
        ({"sysctls": {"net.ipv4.ip_forward": "1\n0"}}, "sysctl"),
        ({"cgroup_parent": "/abs"}, "cgroup_parent"),
        ({"cgroup_parent": "netsim/../x"}, "cgroup_parent"),
        ({"cgroup_parent": ""}, "cgroup_parent"),
        ({"files": {"rel/path": "x"}}, "files"),
        ({"files": {"/a/../etc/shadow": "x"}}, "files"),
        ({"files": {"/dir/": "x"}}, "files"),
        ({"limits": "lots"}, "limits"),
        ({"idmap": (0, 1, 2)}, "idmap"),
    ],
)
def test_bad_fields(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        ContainerSpec(name="c", argv=("true",), **kwargs)  # type: ignore[arg-type]


def test_hostname_defaults_to_name() -> None:
    assert ContainerSpec(name="under_score", argv=("true",)).effective_hostname == "under_score"
    assert ContainerSpec(name="x", argv=("true",), hostname="ok").effective_hostname == "ok"


@pytest.mark.parametrize(
    "kwargs",
    [{"memory_bytes": 0}, {"memory_bytes": -1}, {"pids_max": 1.5}, {"pids_max": True}, {"cpu_quota": 0}, {"cpu_quota": "1"}],
)
def test_bad_limits(kwargs: dict[str, object]) -> None:
    with pytest.raises(SpecError, match="limits"):
        Limits(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs", [{"inside": 1}, {"outside": 0}, {"size": 0}, {"outside": -5}, {"outside": 2**32 - 10}]
)
def test_bad_idmap(kwargs: dict[str, int]) -> None:
    with pytest.raises(SpecError, match="idmap"):
        IdMap(**kwargs)


def test_defaults() -> None:
    spec = ContainerSpec(name="web", argv=("httpd",))
    assert spec.image == "busybox"
    assert spec.effective_hostname == "web"
    assert spec.idmap == IdMap(0, 100000, 65536)
    assert spec.idmap.line() == "0 100000 65536\n"
    assert spec.cgroup_parent == "netsim"
    assert spec.limits == Limits()


def test_spec_is_immutable() -> None:
    env = {"A": "1"}
    spec = ContainerSpec(name="c", argv=("true",), env=env)
    env["A"] = "2"  # the spec keeps its own copy
    assert spec.env["A"] == "1"
    with pytest.raises(TypeError):
        spec.env["B"] = "x"  # type: ignore[index]
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


def test_round_trip_through_json() -> None:
    spec = ContainerSpec(
        name="web",
        argv=("httpd", "-f"),
        hostname="www",
        env={"A": "1"},
        workdir="/www",
        limits=Limits(memory_bytes=1 << 26, pids_max=64, cpu_quota=0.5),
        netns="/run/netns/lab1-c-web",
        idmap=None,
        sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
        cgroup_parent="netsim/lab1",
        files={"/www/index.html": "hello"},
    )
    again = spec_from_dict(json.loads(json.dumps(spec_to_dict(spec))))
    assert again == spec


def test_malformed_dict_raises_spec_error() -> None:
    with pytest.raises(SpecError):
        spec_from_dict({"argv": ["x"]})


def test_container_env() -> None:
    spec = ContainerSpec(name="c", argv=("true",), env={"A": "1", "PATH": "/bin"})
    assert container_env(spec) == {"PATH": "/bin", "HOME": "/root", "HOSTNAME": "c", "A": "1"}
    assert container_env(ContainerSpec(name="c", argv=("true",)), {"B": "2"})["PATH"] == DEFAULT_PATH
    assert container_env(spec, {"A": "9"})["A"] == "9"

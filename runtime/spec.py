"""What a container is: frozen, validated value objects (no kernel access here)."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from runtime.caps import CAP_NUMBERS, DOCKER_DEFAULT_CAPS
from runtime.errors import SpecError

__all__ = [
    "DEFAULT_PATH",
    "SUPPORTED_IMAGES",
    "ContainerSpec",
    "ExecResult",
    "IdMap",
    "Limits",
    "container_env",
    "spec_from_dict",
    "spec_to_dict",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUPPORTED_IMAGES = frozenset({"busybox", "host"})  # and "oci:PATH"

_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
_HOSTNAME_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9_.-]*[a-zA-Z0-9])?\Z")
_SYSCTL_RE = re.compile(r"net[./][a-zA-Z0-9_./-]+\Z")
_MAX_NAME = 64  # the name is the default hostname, and HOST_NAME_MAX is 64


@dataclass(frozen=True)
class Limits:
    """cgroup limits; None means unlimited."""

    memory_bytes: int | None = None
    pids_max: int | None = None
    cpu_quota: float | None = None  # in CPUs, e.g. 0.5

    def __post_init__(self) -> None:
        for attr in ("memory_bytes", "pids_max"):
            value = getattr(self, attr)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise SpecError(f"limits.{attr} must be a positive integer, got {value!r}")
        q = self.cpu_quota
        if q is not None and (isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.001 <= q <= 4096):
            raise SpecError(f"limits.cpu_quota must be a number of CPUs in [0.001, 4096], got {q!r}")


@dataclass(frozen=True)
class IdMap:
    """User-namespace mapping: ids inside..inside+size map to outside..outside+size on the host.

    Container root must be mapped, so `inside` must be 0.
    """

    inside: int = 0
    outside: int = 100000
    size: int = 65536

    def __post_init__(self) -> None:
        for attr in ("inside", "outside", "size"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SpecError(f"idmap.{attr} must be a non-negative integer, got {value!r}")
        if self.inside != 0:
            raise SpecError(f"idmap.inside must be 0 (container root must be mapped), got {self.inside}")
        if self.size < 1 or self.outside + self.size > 2**32 - 1:
            raise SpecError(f"idmap size {self.size} at {self.outside} is out of range")
        if self.outside == 0:
            raise SpecError("idmap.outside must not be 0 (that would make container root host root)")

    def line(self) -> str:
        """The uid_map/gid_map line."""
        return f"{self.inside} {self.outside} {self.size}\n"


def _frozen_str_map(what: str, value: Mapping[str, str]) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{what} must be a mapping, got {type(value).__name__}")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise SpecError(f"{what} keys and values must be strings, got {k!r}: {v!r}")
        if "\0" in k or "\0" in v:
            raise SpecError(f"{what}[{k!r}] contains a NUL byte")
    return MappingProxyType(dict(value))


def _check_abs_path(what: str, path: str) -> None:
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise SpecError(f"{what} must be an absolute path, got {path!r}")
    if ".." in path.split("/"):
        raise SpecError(f"{what} must not contain '..', got {path!r}")


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create and start one container."""

    name: str
    argv: tuple[str, ...]
    image: str = "busybox"
    hostname: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = "/"
    limits: Limits = Limits()
    netns: str | None = None
    idmap: IdMap | None = IdMap()
    sysctls: Mapping[str, str] = field(default_factory=dict)
    cgroup_parent: str = "netsim"
    files: Mapping[str, str] = field(default_factory=dict)
    capabilities: tuple[str, ...] = DOCKER_DEFAULT_CAPS  # what root inside keeps (names without CAP_)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name) or len(self.name) > _MAX_NAME:
            raise SpecError(
                f"container name {self.name!r} is invalid: want [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most {_MAX_NAME} chars"
            )
        if isinstance(self.argv, str) or not isinstance(self.argv, (tuple, list)):
            raise SpecError(f"{self.name}: argv must be a sequence of strings, got {self.argv!r}")
        set_(self, "argv", tuple(self.argv))
        is_oci = isinstance(self.image, str) and self.image.startswith("oci:")
        if not isinstance(self.image, str) or not (self.image in SUPPORTED_IMAGES or (is_oci and len(self.image) > 4)) \
                or "\0" in self.image:
            raise SpecError(f"{self.name}: image {self.image!r} is not supported "
                            f"(known: {sorted(SUPPORTED_IMAGES)} or oci:PATH)")
        empty_ok = is_oci and not self.argv  # an OCI image's Entrypoint/Cmd
        if not empty_ok and (not self.argv or not all(isinstance(a, str) and "\0" not in a for a in self.argv)
                             or not self.argv[0]):
            raise SpecError(f"{self.name}: argv must be a non-empty sequence of strings, got {self.argv!r}"
                            + ("" if is_oci else " (only an oci: image may leave it empty)"))
        if self.hostname is not None and (
            not isinstance(self.hostname, str) or len(self.hostname) > 64 or not _HOSTNAME_RE.match(self.hostname)
        ):
            raise SpecError(f"{self.name}: hostname {self.hostname!r} is invalid")
        env = _frozen_str_map(f"{self.name}: env", self.env)
        for k in env:
            if not k or "=" in k:
                raise SpecError(f"{self.name}: env name {k!r} is invalid")
        set_(self, "env", env)
        _check_abs_path(f"{self.name}: workdir", self.workdir)
        if not isinstance(self.limits, Limits):
            raise SpecError(f"{self.name}: limits must be a Limits, got {type(self.limits).__name__}")
        if self.netns is not None:
            _check_abs_path(f"{self.name}: netns", self.netns)
        if self.idmap is not None and not isinstance(self.idmap, IdMap):
            raise SpecError(f"{self.name}: idmap must be an IdMap or None")
        sysctls = _frozen_str_map(f"{self.name}: sysctls", self.sysctls)
        for k, v in sysctls.items():
            if not _SYSCTL_RE.match(k) or ".." in k or "//" in k:
                raise SpecError(f"{self.name}: sysctl {k!r} is not a net.* sysctl")
            if "\n" in v:
                raise SpecError(f"{self.name}: sysctl {k!r} value contains a newline")
        set_(self, "sysctls", sysctls)
        parts = self.cgroup_parent.split("/") if isinstance(self.cgroup_parent, str) else [""]
        if not all(_NAME_RE.match(p) for p in parts):
            raise SpecError(f"{self.name}: cgroup_parent {self.cgroup_parent!r} must be a relative path of names")
        files = _frozen_str_map(f"{self.name}: files", self.files)
        for path in files:
            _check_abs_path(f"{self.name}: files key", path)
            if path.rstrip("/") == "" or path.endswith("/"):
                raise SpecError(f"{self.name}: files key {path!r} must name a file")
        set_(self, "files", files)
        if isinstance(self.capabilities, str) or not isinstance(self.capabilities, (tuple, list)):
            raise SpecError(f"{self.name}: capabilities must be a sequence of names, got {self.capabilities!r}")
        set_(self, "capabilities", tuple(self.capabilities))
        unknown = [c for c in self.capabilities if c not in CAP_NUMBERS]
        if unknown:
            raise SpecError(f"{self.name}: unknown capabilities {unknown} (names as in capabilities(7), without CAP_)")

    @property
    def effective_hostname(self) -> str:
        return self.hostname if self.hostname is not None else self.name


@dataclass(frozen=True)
class ExecResult:
    """Outcome of Container.exec."""

    returncode: int
    stdout: str
    stderr: str
    duration_s: float


def container_env(
    spec: ContainerSpec, extra: Mapping[str, str] | None = None, image_env: Sequence[str] = ()
) -> dict[str, str]:
    """The environment a process inside the container starts with: defaults, then the image's
    Env (KEY=VALUE), then the spec's env, then `extra`."""
    env = {"PATH": DEFAULT_PATH, "HOME": "/root", "HOSTNAME": spec.effective_hostname}
    for item in image_env:
        key, sep, value = item.partition("=")
        if sep and key:
            env[key] = value
    env.update(spec.env)
    if extra:
        env.update(_frozen_str_map("env", extra))
    return env


def spec_to_dict(spec: ContainerSpec) -> dict[str, Any]:
    """A JSON-ready dict (inverse of spec_from_dict)."""
    lim = spec.limits
    return {
        "name": spec.name,
        "argv": list(spec.argv),
        "image": spec.image,
        "hostname": spec.hostname,
        "env": dict(spec.env),
        "workdir": spec.workdir,
        "limits": {"memory_bytes": lim.memory_bytes, "pids_max": lim.pids_max, "cpu_quota": lim.cpu_quota},
        "netns": spec.netns,
        "idmap": None
        if spec.idmap is None
        else {"inside": spec.idmap.inside, "outside": spec.idmap.outside, "size": spec.idmap.size},
        "sysctls": dict(spec.sysctls),
        "cgroup_parent": spec.cgroup_parent,
        "files": dict(spec.files),
        "capabilities": list(spec.capabilities),
    }


def spec_from_dict(data: Mapping[str, Any]) -> ContainerSpec:
    """Rebuild (and re-validate) a spec written by spec_to_dict."""
    try:
        d = dict(data)
        d["argv"] = tuple(d["argv"])
        if "capabilities" in d:
            d["capabilities"] = tuple(d["capabilities"])
        d["limits"] = Limits(**d.get("limits") or {})
        d["idmap"] = None if d.get("idmap") is None else IdMap(**d["idmap"])
        return ContainerSpec(**d)
    except (KeyError, TypeError) as exc:
        raise SpecError(f"malformed spec data: {exc}") from exc

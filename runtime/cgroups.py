"""A container's cgroup behind one interface, with a cgroup v1 and a cgroup v2 driver.

Detection: v2 when <root>/cgroup.controllers exists (unified mode); otherwise v1, with one
hierarchy per controller found in /proc/self/mountinfo (cpu and cpuacct may share one).
The container cgroup is <hierarchy root>/<cgroup_parent>/<name>.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from runtime.errors import CgroupError
from runtime.spec import Limits

__all__ = [
    "DEVICE_ALLOW",
    "CgroupLayout",
    "CgroupV1",
    "CgroupV2",
    "ContainerCgroup",
    "FastMoves",
    "OnCreate",
    "container_cgroup",
    "detect_layout",
]

OnCreate = Callable[[str, str], None]

V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "devices")
# Device access a container gets (Docker's default list, less console and tun; no blanket
# mknod): null, zero, full, random, urandom, tty, ptmx and the devpts ptys. Everything else —
# a disk above all — can be neither created (mknod) nor opened.
DEVICE_ALLOW = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm", "c 5:2 rwm",
                "c 136:* rwm")  # fmt: skip
V2_CONTROLLERS = ("memory", "pids", "cpu")
CFS_PERIOD_US = 100_000


@dataclass(frozen=True)
class CgroupLayout:
    """Where the cgroup hierarchies are mounted. v1: controller -> mount point; v2: {"": root}."""

    version: int
    mounts: Mapping[str, str]


def _unescape_mountinfo(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def detect_layout(root: str = "/sys/fs/cgroup", mountinfo: str = "/proc/self/mountinfo") -> CgroupLayout:
    """Find the cgroup hierarchies of this machine (see module doc)."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return CgroupLayout(2, MappingProxyType({"": root}))
    mounts: dict[str, str] = {}
    try:
        with open(mountinfo, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise CgroupError(f"cannot read {mountinfo}: {exc}") from exc
    for line in lines:
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, post_fields = pre.split(), post.split()
        if len(post_fields) < 3 or post_fields[0] != "cgroup" or len(fields) < 5:
            continue
        mount_point = _unescape_mountinfo(fields[4])
        for opt in post_fields[2].split(","):
            if opt in V1_CONTROLLERS and opt not in mounts:
                mounts[opt] = mount_point
    missing = [c for c in ("memory", "pids", "cpu") if c not in mounts]
    if missing:
        raise CgroupError(f"no cgroup v2 at {root} and no cgroup v1 hierarchy for {', '.join(missing)}")
    return CgroupLayout(1, MappingProxyType(mounts))


def _write(path: str, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror}") from exc


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read()
    except OSError as exc:
        raise CgroupError(f"cannot read {path}: {exc.strerror}") from exc


def _keyed(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _mkdirs(root: str, rel: str, on_create: OnCreate | None) -> str:
    """mkdir each component of rel under root, announcing every dir it creates first."""
    path = root
    for part in rel.split("/"):
        path = os.path.join(path, part)
        if os.path.isdir(path):
            continue
        if on_create is not None:
            on_create("cgroup", path)
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        except OSError as exc:
            raise CgroupError(f"cannot create cgroup {path}: {exc.strerror}") from exc
    return path


class ContainerCgroup(ABC):
    """The cgroup(s) of one container, whatever the cgroup version."""

    version: int

    def __init__(self, dirs: Mapping[str, str]) -> None:
        self.dirs = MappingProxyType(dict(dirs))  # controller -> directory

    @property
    def paths(self) -> list[str]:
        """The distinct cgroup directories, in a stable order."""
        return sorted(set(self.dirs.values()))

    @property
    def procs_files(self) -> list[str]:
        return [os.path.join(p, "cgroup.procs") for p in self.paths]

    def create(self, limits: Limits, on_create: OnCreate | None = None) -> None:
        """Create the directories (parents too) and apply `limits`."""
        for path in self.paths:
            if os.path.isdir(path):
                if self.pids():
                    raise CgroupError(f"cgroup {path} already exists and has processes")
                continue
            root, rel = self._split(path)
            _mkdirs(root, rel, on_create)
        self.apply_limits(limits)

    @abstractmethod
    def _split(self, path: str) -> tuple[str, str]:
        """(hierarchy root, relative path) of one of our directories."""

    @abstractmethod
    def apply_limits(self, limits: Limits) -> None: ...

    def join(self, pid: int) -> None:
        """Move `pid` into every hierarchy. Only os calls: safe in a forked child / preexec_fn."""
        data = str(pid).encode()
        for procs in self.procs_files:
            fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def pids(self) -> list[int]:
        """Host pids of every process in the container cgroup(s)."""
        found: set[int] = set()
        for procs in self.procs_files:
            try:
                with open(procs, encoding="ascii") as fh:
                    found.update(int(x) for x in fh.read().split())
            except FileNotFoundError:
                continue
        return sorted(found)

    @abstractmethod
    def stats(self) -> dict[str, int]: ...

    @abstractmethod
    def oom_kills(self) -> int: ...

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup(s)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove(self, timeout: float = 5.0) -> None:
        """rmdir the container's directories, killing stragglers and retrying while tasks drain."""
        deadline = time.monotonic() + timeout
        delay = 0.0005
        for path in self.paths:
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() > deadline:
                        raise CgroupError(f"cannot remove cgroup {path}: {exc.strerror}") from exc
                self.kill_all()
                time.sleep(delay)
                delay = min(delay * 2, 0.05)


class CgroupV1(ContainerCgroup):
    """cgroup v1: one directory per hierarchy (memory, pids, cpu, cpuacct)."""

    version = 1

    def __init__(self, layout: CgroupLayout, rel: str) -> None:
        self._roots = {c: layout.mounts[c] for c in V1_CONTROLLERS if c in layout.mounts}
        super().__init__({c: os.path.join(root, rel) for c, root in self._roots.items()})

    def _split(self, path: str) -> tuple[str, str]:
        for root in self._roots.values():
            if path.startswith(root.rstrip("/") + "/"):
                return root, path[len(root.rstrip("/")) + 1 :]
        raise CgroupError(f"{path} is not under a cgroup hierarchy")  # pragma: no cover

    def apply_limits(self, limits: Limits) -> None:
        devices = self.dirs.get("devices")
        if devices is not None:  # deny all, then allow the list (v1 devices controller)
            _write(os.path.join(devices, "devices.deny"), "a")
            for rule in DEVICE_ALLOW:
                _write(os.path.join(devices, "devices.allow"), rule)
        mem = self.dirs["memory"]
        if limits.memory_bytes is not None:
            _write(os.path.join(mem, "memory.limit_in_bytes"), str(limits.memory_bytes))
            memsw = os.path.join(mem, "memory.memsw.limit_in_bytes")
            if os.path.exists(memsw):  # swap must not hide an over-allocation
                _write(memsw, str(limits.memory_bytes))
        if limits.pids_max is not None:
            _write(os.path.join(self.dirs["pids"], "pids.max"), str(limits.pids_max))
        if limits.cpu_quota is not None:
            cpu = self.dirs["cpu"]
            _write(os.path.join(cpu, "cpu.cfs_period_us"), str(CFS_PERIOD_US))
            _write(os.path.join(cpu, "cpu.cfs_quota_us"), str(max(1000, round(limits.cpu_quota * CFS_PERIOD_US))))

    def stats(self) -> dict[str, int]:
        mem = int(_read(os.path.join(self.dirs["memory"], "memory.usage_in_bytes")))
        pids = int(_read(os.path.join(self.dirs["pids"], "pids.current")))
        acct = self.dirs.get("cpuacct")
        if acct is not None:
            cpu = int(_read(os.path.join(acct, "cpuacct.usage")))
        else:  # pragma: no cover - kernels without cpuacct
            cpu = _keyed(_read(os.path.join(self.dirs["cpu"], "cpu.stat"))).get("usage_usec", 0) * 1000
        return {"memory_bytes": mem, "pids": pids, "cpu_usage_ns": cpu}

    def oom_kills(self) -> int:
        try:
            return _keyed(_read(os.path.join(self.dirs["memory"], "memory.oom_control"))).get("oom_kill", 0)
        except CgroupError:
            return 0


class CgroupV2(ContainerCgroup):
    """cgroup v2: one directory; controllers enabled down the path via cgroup.subtree_control.

    Devices: v2 has no devices controller files; access control needs an eBPF program of type
    BPF_PROG_TYPE_CGROUP_DEVICE attached to the cgroup (what runc does). Not done here: on v2,
    containers rely on the user namespace (mknod is refused there) and the minimal /dev."""

    version = 2

    def __init__(self, layout: CgroupLayout, rel: str) -> None:
        self._root = layout.mounts[""]
        super().__init__({"": os.path.join(self._root, rel)})

    def _split(self, path: str) -> tuple[str, str]:
        return self._root, os.path.relpath(path, self._root)

    def create(self, limits: Limits, on_create: OnCreate | None = None) -> None:
        path = self.dirs[""]
        rel = os.path.relpath(path, self._root)
        # Enable controllers at each level above the leaf (parents must hold no processes).
        current = self._root
        for part in rel.split("/")[:-1]:
            self._enable_controllers(current)
            current = _mkdirs(current, part, on_create)
        self._enable_controllers(current)
        super().create(limits, on_create)

    def _enable_controllers(self, path: str) -> None:
        available = set(_read(os.path.join(path, "cgroup.controllers")).split())
        enabled = set(_read(os.path.join(path, "cgroup.subtree_control")).split())
        wanted = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
        missing = [c for c in V2_CONTROLLERS if c not in available]
        if missing:
            raise CgroupError(f"cgroup v2 controllers {missing} are not available at {path}")
        if wanted:
            _write(os.path.join(path, "cgroup.subtree_control"), " ".join("+" + c for c in wanted))

    def apply_limits(self, limits: Limits) -> None:
        path = self.dirs[""]
        if limits.memory_bytes is not None:
            _write(os.path.join(path, "memory.max"), str(limits.memory_bytes))
            swap = os.path.join(path, "memory.swap.max")
            if os.path.exists(swap):
                _write(swap, "0")
        if limits.pids_max is not None:
            _write(os.path.join(path, "pids.max"), str(limits.pids_max))
        if limits.cpu_quota is not None:
            quota = max(1000, round(limits.cpu_quota * CFS_PERIOD_US))
            _write(os.path.join(path, "cpu.max"), f"{quota} {CFS_PERIOD_US}")

    def stats(self) -> dict[str, int]:
        path = self.dirs[""]
        return {
            "memory_bytes": int(_read(os.path.join(path, "memory.current"))),
            "pids": int(_read(os.path.join(path, "pids.current"))),
            "cpu_usage_ns": _keyed(_read(os.path.join(path, "cpu.stat"))).get("usage_usec", 0) * 1000,
        }

    def oom_kills(self) -> int:
        try:
            return _keyed(_read(os.path.join(self.dirs[""], "memory.events"))).get("oom_kill", 0)
        except CgroupError:
            return 0

    def kill_all(self) -> None:
        kill_file = os.path.join(self.dirs[""], "cgroup.kill")
        if os.path.exists(kill_file):
            try:
                _write(kill_file, "1")
                return
            except CgroupError:
                pass
        super().kill_all()


class FastMoves:
    """Keeps the kernel's `favordynmods` mode on while this runtime moves tasks between cgroups.

    Moving a task (writing cgroup.procs) takes the global cgroup_threadgroup_rwsem for writing;
    in the default mode that waits for an RCU grace period, 8-20 ms per container here, the
    longest wait of a start. With the cgroup mount option `favordynmods` (Linux >= 6.2, for
    "dynamic" workloads like container managers) the rwsem stays in its slow-reader mode and a
    move takes < 1 ms, at the price of slightly costlier fork/exit machine-wide. The mode is
    global while any hierarchy mounted with it exists, so the runtime does not remount the host's
    hierarchies: a keeper process mounts a private, controller-less named v1 hierarchy
    (name=netsim-fav-<pid>) in a mount namespace of its own, invisible to the host, and waits on a
    pipe. When the runtime process goes (even by SIGKILL) the pipe closes, the keeper exits, its
    mount namespace and with it the hierarchy disappear, and the kernel is back to its default.
    Started on first use; if the kernel refuses (old kernel, no cgroup v1) moves are just slower.
    """

    def __init__(self, anchor: str, enabled: bool = True) -> None:
        self._anchor = anchor  # an existing directory to mount on inside the keeper's namespace
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._hold: int | None = None
        self.active: bool | None = None if enabled else False  # None: not tried yet

    def ensure(self) -> bool:
        """Start the keeper once; True when favordynmods is on."""
        with self._lock:
            if self.active is None:
                self.active = self._start()
            return self.active

    def _start(self) -> bool:
        name = f"netsim-fav-{os.getpid()}"
        script = ('mount -t cgroup -o none,name="$1",favordynmods "$1" "$2" 2>/dev/null || exit 1; '
                  'echo ok; read -r _')  # fmt: skip
        read_end, self._hold = os.pipe2(os.O_CLOEXEC)
        try:
            self._proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", name, self._anchor],
                stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
        except OSError:
            return False
        finally:
            os.close(read_end)
        assert self._proc.stdout is not None
        ok = self._proc.stdout.readline() == b"ok\n"
        self._proc.stdout.close()
        if not ok:
            self._proc.wait()
        return ok

    def close(self) -> None:
        """Let the keeper go (the mode returns to the default once no runtime holds it)."""
        with self._lock:
            if self._hold is not None:
                os.close(self._hold)
                self._hold = None
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                self._proc = None


def container_cgroup(layout: CgroupLayout, parent: str, name: str) -> ContainerCgroup:
    """The cgroup of container `name` under `parent` (not created yet)."""
    rel = f"{parent.strip('/')}/{name}"
    return CgroupV2(layout, rel) if layout.version == 2 else CgroupV1(layout, rel)


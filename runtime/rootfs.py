"""Root filesystems: the per-container overlay (host side) and the mount work done inside the
container's mount namespace (bind the root onto itself, /dev, /proc, pivot_root, masked paths).

The in-container functions use paths relative to the current directory on purpose: once the
process runs as container root (host uid 100000) it may not traverse the root-only state dir.
"""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from runtime import namespaces as ns

__all__ = [
    "DEV_NODES",
    "MASKED_PATHS",
    "READONLY_PATHS",
    "bind_host_dirs",
    "enter_rootfs",
    "fs_type",
    "is_mounted",
    "mask_paths",
    "mount_container_dir",
    "mount_overlay",
    "mount_proc",
    "mount_sysfs",
    "pivot_into_cwd",
    "prepare_upper",
    "setup_dev",
    "unmount",
]

OVERLAYFS = "overlay"
TMPFS = "tmpfs"
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
# Docker's (moby oci/defaults.go) masked and read-only paths, relative to the new root. Masked
# files get /dev/null bound over them, masked directories an empty read-only tmpfs.
MASKED_PATHS = (
    "proc/asound", "proc/acpi", "proc/interrupts", "proc/kcore", "proc/keys", "proc/latency_stats",
    "proc/timer_list", "proc/timer_stats", "proc/sched_debug", "proc/scsi",
    "sys/firmware", "sys/devices/virtual/powercap",
)  # fmt: skip
READONLY_PATHS = ("proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger")


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _mounts() -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount of the caller's mount namespace."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            pre, _, post = line.partition(" - ")
            out.append((_unescape(pre.split()[4]), post.split()[0]))
    return out


def is_mounted(path: str) -> bool:
    path = os.path.realpath(path)
    return any(mp == path for mp, _ in _mounts())


def fs_type(path: str) -> str:
    """File system type holding `path` (longest matching mount point)."""
    path = os.path.realpath(path)
    best, kind = "", "unknown"
    for mp, fstype in _mounts():
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
            best, kind = mp, fstype
    return kind


def prepare_upper(upper: Path, owner: int, files: Mapping[str, str]) -> None:
    """Fill the overlay upper dir: owned by container root, plus the spec's extra files."""
    top = str(upper)
    os.chown(top, owner, owner)
    os.chmod(top, 0o755)
    made = {top}
    for inside, text in files.items():
        target = os.path.join(top, inside.lstrip("/"))
        parent = top
        for part in os.path.relpath(os.path.dirname(target), top).split("/"):
            if part == ".":
                continue
            parent = os.path.join(parent, part)
            if parent not in made and not os.path.isdir(parent):
                os.mkdir(parent, 0o755)
                os.chown(parent, owner, owner)
            made.add(parent)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            data = memoryview(text.encode())
            while data:
                data = data[os.write(fd, data):]
            os.fchown(fd, owner, owner)
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)


def mount_container_dir(target: Path) -> None:
    """A tmpfs for one container's directory in the state dir (state.json, logs, the overlay's
    upper and work dirs and its mount point), used when the state dir is on a disk file system.

    There, each file or directory created and removed costs ext4 block allocation, journal
    updates and discards (0.1-0.5 ms apiece, state.json is rewritten three times per run),
    while a tmpfs is mounted and unmounted in ~0.1 ms and takes everything with it. Everything
    then lives in memory, as on machines whose /run is a tmpfs (the usual case): pages the
    container writes to its root fs or its logs are charged to its memory cgroup."""
    ns.mount("tmpfs", str(target), "tmpfs", ns.MS_NODEV | ns.MS_NOSUID, "mode=711")


def mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    """Mount the container's overlay. upper/work must not be on overlayfs (Runtime checks its
    state dir once with fs_type)."""
    data = f"lowerdir={lower},upperdir={upper},workdir={work}"
    try:  # volatile: no syncs of the upper dir (a container's writes do not outlive a crash anyway)
        ns.mount("overlay", str(target), "overlay", ns.MS_NODEV, data + ",volatile")
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # kernels before 5.10 do not know "volatile"
            raise
        ns.mount("overlay", str(target), "overlay", ns.MS_NODEV, data)


def unmount(target: str) -> None:
    """Unmount `target` if mounted (lazily if busy). Not mounted / missing counts as done."""
    try:
        ns.umount2(target)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT):
            return
        if exc.errno != errno.EBUSY:
            raise
        ns.umount2(target, ns.MNT_DETACH)


# ---- inside the container's mount namespace -------------------------------------------------


def enter_rootfs(rootfs: str) -> None:
    """Make every mount private, bind `rootfs` onto itself and chdir into the bind.

    Runs while the process still has its host uid (it can traverse the state dir).
    """
    ns.mount(None, "/", None, ns.MS_REC | ns.MS_PRIVATE)
    ns.mount(rootfs, rootfs, None, ns.MS_BIND | ns.MS_REC)
    os.chdir(rootfs)


def setup_dev() -> None:
    """A tmpfs /dev with bind-mounted host device nodes (mknod is not allowed in a userns),
    devpts (new instance) and /dev/shm. Relative to the cwd (the new root)."""
    ns.mount("tmpfs", "dev", "tmpfs", ns.MS_NOSUID | ns.MS_STRICTATIME | ns.MS_NOEXEC, "mode=755,size=65536k")
    for node in DEV_NODES:
        target = "dev/" + node
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
        ns.mount("/dev/" + node, target, None, ns.MS_BIND)
    os.mkdir("dev/pts", 0o755)
    ns.mount("devpts", "dev/pts", "devpts", ns.MS_NOSUID | ns.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", "dev/ptmx")
    os.mkdir("dev/shm", 0o1777)
    ns.mount("shm", "dev/shm", "tmpfs", ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC, "mode=1777,size=65536k")
    os.mkdir("dev/mqueue", 0o755)
    ns.mount("mqueue", "dev/mqueue", "mqueue", ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, "dev/" + name)


def mount_proc() -> None:
    """Mount a new proc at ./proc; the caller must already be inside the new PID namespace."""
    ns.mount("proc", "proc", "proc", ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC)


def mount_sysfs(rootfs: str) -> None:
    """Mount a read-only sysfs at rootfs/sys. Runs as host root in a private mount namespace made
    just for this, after joining the container's netns (so /sys/class/net shows the container's
    interfaces), before the user namespace: the mount namespace created next, owned by the user
    namespace, gets it as a locked mount that container root cannot make writable or unmount."""
    target = os.path.join(rootfs, "sys")
    if not os.path.isdir(target):
        os.mkdir(target, 0o555)
    ns.mount("sysfs", target, "sysfs", ns.MS_RDONLY | ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC)


def bind_host_dirs(rootfs: str, names: tuple[str, ...]) -> None:
    """Bind the host's /NAME read-only (nosuid, nodev) onto rootfs/NAME, for each name. Like
    mount_sysfs: as host root, before the user namespace, so the mounts are locked read-only."""
    for name in names:
        target = os.path.join(rootfs, name)
        ns.mount("/" + name, target, None, ns.MS_BIND)
        ns.mount(None, target, None, ns.MS_BIND | ns.MS_REMOUNT | ns.MS_RDONLY | ns.MS_NOSUID | ns.MS_NODEV)


def mask_paths() -> None:
    """Docker's masked paths (/dev/null or an empty read-only tmpfs over them) and read-only
    paths (a read-only bind of themselves). Relative to the cwd (the new root)."""
    for path in MASKED_PATHS:
        try:
            mode = os.lstat(path).st_mode  # one system call per path: a start does this for each
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(mode):
            ns.mount("tmpfs", path, "tmpfs", ns.MS_RDONLY | ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC, "size=0")
        elif not stat.S_ISLNK(mode) or os.path.exists(path):
            ns.mount("dev/null", path, None, ns.MS_BIND)
    for path in READONLY_PATHS:
        if os.path.exists(path):
            ns.mount(path, path, None, ns.MS_BIND | ns.MS_REC)
            ns.mount(None, path, None, ns.MS_BIND | ns.MS_REMOUNT | ns.MS_RDONLY | ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC)


def pivot_into_cwd() -> None:
    """pivot_root to the cwd (a mount point) and detach the old root."""
    ns.pivot_root(".", ".")
    ns.umount2(".", ns.MNT_DETACH)
    os.chdir("/")

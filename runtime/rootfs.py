"""Root filesystems: the per-container overlay (host side) and the mount work done inside the
container's mount namespace (bind the root onto itself, /dev, /proc, pivot_root, masked paths).

The in-container functions use paths relative to the current directory on purpose: once the
process runs as container root (host uid 100000) it may not traverse the root-only state dir.
"""
from __future__ import annotations

import errno
import os
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
    "mount_overlay",
    "mount_proc",
    "mount_sysfs",
    "pivot_into_cwd",
    "prepare_upper",
    "setup_dev",
    "unmount",
]

OVERLAYFS = "overlay"
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
    os.chown(upper, owner, owner)
    os.chmod(upper, 0o755)
    for inside, text in files.items():
        target = upper / inside.lstrip("/")
        parent = upper
        for part in target.parent.relative_to(upper).parts:
            parent = parent / part
            if not parent.is_dir():
                parent.mkdir(mode=0o755)
                os.chown(parent, owner, owner)
        target.write_text(text)
        os.chown(target, owner, owner)
        os.chmod(target, 0o644)


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
        if os.path.isdir(path) and not os.path.islink(path):
            ns.mount("tmpfs", path, "tmpfs", ns.MS_RDONLY | ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC, "size=0")
        elif os.path.exists(path):
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

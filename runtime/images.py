"""Read-only image trees (overlay lower dirs), built once and cached under the image dir.

The busybox image is made from the host's static busybox: bin/busybox plus one symlink per
applet at the path `busybox --list-full` gives, a minimal /etc, and empty mount points.
User namespaces: an image is built per owner uid (the IdMap's `outside` base), every file
lchown'ed to that uid/gid, so it is owned by root inside the container. Built in a temp dir
and renamed into place, so concurrent builders never see a half-built image.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from runtime.errors import ImageError

__all__ = ["BUSYBOX", "ensure_image", "image_path"]

BUSYBOX = "/bin/busybox"
_FORMAT = "v1"  # bump when the image layout changes

_DIRS = {
    "bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
    "etc": 0o755, "proc": 0o555, "sys": 0o555, "dev": 0o755, "root": 0o700, "tmp": 0o1777,
    "var": 0o755, "var/tmp": 0o1777, "run": 0o755, "home": 0o755, "mnt": 0o755,
}  # fmt: skip

_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hostname": "localhost\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "etc/resolv.conf": "",
    "etc/nsswitch.conf": "hosts: files dns\n",
}


def image_path(image_dir: Path, image: str, owner: int) -> Path:
    """Where the image for `owner` (host uid that plays root) lives."""
    return image_dir / f"{image}-{_FORMAT}-{owner}"


def ensure_image(image_dir: Path, image: str, owner: int) -> Path:
    """Return the cached image tree, building it first if needed."""
    dest = image_path(image_dir, image, owner)
    if dest.is_dir():
        return dest
    if image != "busybox":
        raise ImageError(f"unknown image {image!r} (only 'busybox' is available)")
    try:
        image_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{dest.name}-", dir=image_dir))
    except OSError as exc:
        raise ImageError(f"cannot create image dir {image_dir}: {exc}") from exc
    try:
        _build_busybox(tmp, owner)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # lost a race with another builder: theirs is as good
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ImageError(f"cannot build image {image!r} in {dest}: {exc}") from exc
    return dest


def _applets() -> list[str]:
    if not os.access(BUSYBOX, os.X_OK):
        raise ImageError(f"{BUSYBOX} not found: install busybox-static")
    out = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, timeout=10, check=True).stdout
    return [line.strip().lstrip("/") for line in out.splitlines() if line.strip()]


def _build_busybox(root: Path, owner: int) -> None:
    os.chmod(root, 0o755)
    for rel in _DIRS:
        (root / rel).mkdir(exist_ok=True)
    shutil.copyfile(BUSYBOX, root / "bin/busybox")  # a copy: chown must not touch the host's binary
    os.chmod(root / "bin/busybox", 0o755)
    for rel in _applets():
        link = root / rel
        if rel == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/bin/busybox", link)
    for rel, text in _FILES.items():
        (root / rel).write_text(text)
        os.chmod(root / rel, 0o644)
    for rel, mode in _DIRS.items():
        os.chmod(root / rel, mode)
    for dirpath, dirnames, filenames in os.walk(root):
        os.lchown(dirpath, owner, owner)
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), owner, owner)

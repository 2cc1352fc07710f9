"""Read-only image trees (overlay lower dirs), built once and cached under the image dir.

- `busybox`: the host's static busybox: bin/busybox plus one symlink per applet at the path
  `busybox --list-full` gives, a minimal /etc, and empty mount points.
- `host`: Mininet's model with a private rest: the host's /usr (and /bin, /lib, /lib64, /sbin
  where they are directories rather than merged-/usr symlinks) are bind-mounted read-only into
  the container (Image.binds; runtime.process mounts them before the user namespace exists, so
  container root cannot make them writable), over a tree of its own: a minimal /etc (passwd,
  group, hosts, an empty resolv.conf; the host's ld.so.cache, nsswitch.conf, protocols,
  services, ethertypes and /etc/alternatives links), /tmp, /var, /root, /run. python3 runs.
  The host's files are owned by host root, so inside a user namespace they show as nobody.
- `oci:PATH`: a docker-save tarball or OCI layout, unpacked by runtime.oci; its config
  (Env, Entrypoint, Cmd, WorkingDir) is kept next to the tree (Image.config).

User namespaces: an image is built per owner uid (the IdMap's `outside` base), every file
lchown'ed to that uid/gid, so it is owned by root inside the container. Built in a temp dir
and renamed into place, so concurrent builders never see a half-built image.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runtime import oci
from runtime.errors import ImageError
from runtime.oci import ImageConfig

__all__ = ["BUSYBOX", "HOST_BINDS", "Image", "ensure_image", "image_path", "prepare_image"]

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


HOST_BINDS = ("usr", "bin", "sbin", "lib", "lib64")  # bound read-only when a directory on the host
_HOST_ETC_COPIES = ("ld.so.cache", "nsswitch.conf", "protocols", "services", "ethertypes")
_OCI_CONFIG = "config.json"
_OCI_ROOT = "rootfs"


@dataclass(frozen=True)
class Image:
    """An image ready to be an overlay lower dir: its tree, host dirs to bind read-only into
    the container (relative names, e.g. "usr"), and its config (OCI images only)."""

    path: Path
    binds: tuple[str, ...] = ()
    config: ImageConfig = field(default_factory=ImageConfig)


def image_path(image_dir: Path, image: str, owner: int) -> Path:
    """Where the image for `owner` (host uid that plays root) lives (busybox and host)."""
    return image_dir / f"{image}-{_FORMAT}-{owner}"


def _host_binds() -> tuple[str, ...]:
    return tuple(d for d in HOST_BINDS if os.path.isdir("/" + d) and not os.path.islink("/" + d))


def prepare_image(image_dir: Path, image: str, owner: int) -> Image:
    """The image `image` (busybox, host or oci:PATH) for `owner`, built or imported if needed."""
    if image == "busybox":
        return Image(ensure_image(image_dir, image, owner))
    if image == "host":
        return Image(ensure_image(image_dir, image, owner), _host_binds())
    if image.startswith("oci:"):
        return _prepare_oci(image_dir, Path(image[4:]).absolute(), owner)
    raise ImageError(f"unknown image {image!r} (busybox, host or oci:PATH)")


def _prepare_oci(image_dir: Path, source_path: Path, owner: int) -> Image:
    with oci.OciSource(source_path) as source:
        config_blob, layers = source.manifest()
        try:
            config = ImageConfig.from_oci(json.loads(config_blob))
        except ValueError as exc:
            raise ImageError(f"image {source_path}: config is not JSON: {exc}") from exc
        dest = image_dir / f"oci-{oci.image_id(config_blob)[:24]}-{_FORMAT}-{owner}"

        def build(tmp: Path, owner: int) -> None:
            root = tmp / _OCI_ROOT
            root.mkdir()
            os.chown(root, owner, owner)
            oci.unpack_layers(source, layers, root, owner)
            _mount_points(root, owner)
            (tmp / _OCI_CONFIG).write_text(json.dumps(config.to_dict()))

        _build_once(image_dir, dest, owner, build)
    return Image(dest / _OCI_ROOT, (), config)


def _mount_points(root: Path, owner: int) -> None:
    """Directories the runtime mounts on (an image need not have them)."""
    for rel, mode in (("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("etc", 0o755), ("tmp", 0o1777)):
        path = root / rel
        if not path.is_dir() and not path.is_symlink():
            path.mkdir()
            os.chmod(path, mode)
            os.lchown(path, owner, owner)


def ensure_image(image_dir: Path, image: str, owner: int) -> Path:
    """Return the cached busybox or host image tree, building it first if needed."""
    dest = image_path(image_dir, image, owner)
    if dest.is_dir():
        return dest
    builders = {"busybox": _build_busybox, "host": _build_host}
    if image not in builders:
        raise ImageError(f"unknown image {image!r} (busybox, host or oci:PATH)")
    _build_once(image_dir, dest, owner, builders[image])
    return dest


def _build_once(image_dir: Path, dest: Path, owner: int, build: Callable[[Path, int], None]) -> None:
    """Build into a temp dir next to `dest` and rename it into place (a lost race is fine)."""
    if dest.is_dir():
        return
    try:
        image_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{dest.name}-", dir=image_dir))
    except OSError as exc:
        raise ImageError(f"cannot create image dir {image_dir}: {exc}") from exc
    try:
        build(tmp, owner)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # lost a race with another builder: theirs is as good
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ImageError(f"cannot build image {dest.name} in {image_dir}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
    _chown_tree(root, owner)


def _build_host(root: Path, owner: int) -> None:
    os.chmod(root, 0o755)
    binds = _host_binds()
    for rel in HOST_BINDS:
        host = "/" + rel
        if rel in binds:
            (root / rel).mkdir(mode=0o755)
        elif os.path.islink(host):
            os.symlink(os.readlink(host), root / rel)  # merged /usr: bin -> usr/bin
    for rel in ("etc", "proc", "sys", "dev", "root", "tmp", "var", "var/tmp", "run", "home", "mnt"):
        (root / rel).mkdir(exist_ok=True)
        os.chmod(root / rel, _DIRS.get(rel, 0o755))
    for rel, text in _FILES.items():
        (root / rel).write_text(text)
        os.chmod(root / rel, 0o644)
    for name in _HOST_ETC_COPIES:
        if os.path.isfile("/etc/" + name):
            shutil.copyfile("/etc/" + name, root / "etc" / name)
            os.chmod(root / "etc" / name, 0o644)
    if os.path.isdir("/etc/alternatives"):  # /usr/bin/awk -> /etc/alternatives/awk -> /usr/bin/mawk
        (root / "etc/alternatives").mkdir()
        for entry in os.scandir("/etc/alternatives"):
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), root / "etc/alternatives" / entry.name)
    _chown_tree(root, owner)


def _chown_tree(root: Path, owner: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.lchown(dirpath, owner, owner)
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), owner, owner)

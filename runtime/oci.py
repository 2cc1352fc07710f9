"""OCI image import: a `docker save` tarball or an OCI image layout (a directory or a tar of one)
unpacked into a local store, layer by layer.

    manifest ─► config (Env, Entrypoint, Cmd, WorkingDir) and layers, bottom first
    each layer: tar (plain or gzip) extracted over the tree so far, where
      dir/.wh.NAME        deletes NAME from the layers below (the marker itself is not kept)
      dir/.wh..wh..opq    empties dir of what the layers below put there (opaque directory)

The store key is the sha256 of the config blob (Docker's image id), so the same image imported
from two paths is unpacked once. Files are chowned to `owner` + their uid/gid in the layer
(root in the layer is root inside the container's user namespace).

Extraction never leaves the tree: names are normalised ('..' refused), every parent is resolved
and must stay below the root, whatever is in the way of a new entry (a symlink from a lower
layer above all) is removed first instead of written through, hard links must point inside,
and device nodes are skipped (the container's /dev is its own).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from runtime.errors import ImageError

__all__ = ["ImageConfig", "OciSource", "unpack_layers"]

_MAX_ID = 65535  # ids above a 64 Ki mapping become nobody
_NOBODY = 65534
_WH = ".wh."
_OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class ImageConfig:
    """What an image's config says about how to run it (empty when it says nothing)."""

    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    workdir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"env": list(self.env), "entrypoint": list(self.entrypoint), "cmd": list(self.cmd),
                "workdir": self.workdir}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageConfig:
        return cls(tuple(data.get("env") or ()), tuple(data.get("entrypoint") or ()), tuple(data.get("cmd") or ()),
                   data.get("workdir") or "")  # fmt: skip

    @classmethod
    def from_oci(cls, blob: dict[str, Any]) -> ImageConfig:
        cfg = blob.get("config") or blob.get("Config") or {}

        def strs(key: str) -> tuple[str, ...]:
            value = cfg.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ImageError(f"image config {key} must be a list of strings, got {value!r}")
            return tuple(value)

        workdir = cfg.get("WorkingDir") or ""
        if not isinstance(workdir, str):
            raise ImageError(f"image config WorkingDir must be a string, got {workdir!r}")
        return cls(strs("Env"), strs("Entrypoint"), strs("Cmd"), workdir)


def _norm(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return "/".join(parts)


class OciSource:
    """A docker-save tarball, an OCI layout directory or a tar of an OCI layout."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        try:
            if path.is_dir():
                return
            self._tar = tarfile.open(path, "r:*")
            self._members = {_norm(m.name): m for m in self._tar.getmembers() if m.isfile()}
        except (OSError, tarfile.TarError) as exc:
            raise ImageError(f"cannot read image archive {path}: {exc}") from exc

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def __enter__(self) -> OciSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def has(self, name: str) -> bool:
        name = _norm(name)
        return name in self._members if self._tar is not None else (self.path / name).is_file()

    def open(self, name: str) -> IO[bytes]:
        name = _norm(name)
        if ".." in name.split("/"):
            raise ImageError(f"image archive {self.path}: bad blob name {name!r}")
        try:
            if self._tar is None:
                return open(self.path / name, "rb")
            fh = self._tar.extractfile(self._members[name])
            if fh is None:  # pragma: no cover - members are regular files
                raise KeyError(name)
            return fh
        except (KeyError, OSError) as exc:
            raise ImageError(f"image archive {self.path} has no {name!r}") from exc

    def json(self, name: str) -> Any:
        with self.open(name) as fh:
            raw = fh.read()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ImageError(f"image archive {self.path}: {name} is not JSON: {exc}") from exc

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            return fh.read()

    def manifest(self) -> tuple[bytes, list[str]]:
        """(config blob bytes, layer blob names bottom first), from an OCI index or docker's manifest.json."""
        try:
            if self.has("index.json"):
                return self._oci_manifest()
            if self.has("manifest.json"):
                entries = self.json("manifest.json")
                entry = entries[0]
                return self.read(entry["Config"]), [str(layer) for layer in entry["Layers"]]
        except (KeyError, IndexError, TypeError) as exc:
            raise ImageError(f"image archive {self.path}: malformed manifest ({exc!r})") from exc
        raise ImageError(f"{self.path} is neither a docker-save archive (manifest.json) nor an OCI layout (index.json)")

    def _blob(self, digest: str) -> str:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or not hexd.isalnum():
            raise ImageError(f"image archive {self.path}: unsupported digest {digest!r}")
        return f"blobs/{algo}/{hexd}"

    def _oci_manifest(self) -> tuple[bytes, list[str]]:
        doc = self.json("index.json")
        for _ in range(4):  # an index may point at an index (multi-platform): take amd64, else the first
            manifests = doc["manifests"]
            pick = next((m for m in manifests if (m.get("platform") or {}).get("architecture") == "amd64"), manifests[0])
            doc = self.json(self._blob(pick["digest"]))
            if "layers" in doc:
                break
        layers = []
        for layer in doc["layers"]:
            media = str(layer.get("mediaType", ""))
            if "zstd" in media:
                raise ImageError(f"image archive {self.path}: zstd layers are not supported ({media})")
            layers.append(self._blob(layer["digest"]))
        return self.read(self._blob(doc["config"]["digest"])), layers


def image_id(config_blob: bytes) -> str:
    return hashlib.sha256(config_blob).hexdigest()


# ---- unpacking --------------------------------------------------------------------------------


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root + "/")


def _shift(value: int, owner: int) -> int:
    return owner + (value if 0 <= value <= _MAX_ID else _NOBODY)


def _layer_tar(fh: IO[bytes]) -> tarfile.TarFile:
    head = fh.read(2)
    fh.seek(0)
    if head == b"\x1f\x8b":
        return tarfile.open(fileobj=gzip.GzipFile(fileobj=fh), mode="r|")  # type: ignore[arg-type]
    return tarfile.open(fileobj=fh, mode="r|")


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    yield from tar


def unpack_layers(source: OciSource, layers: list[str], root: Path, owner: int) -> None:
    """Extract `layers` (bottom first) into `root`, honouring whiteouts (see module doc)."""
    top = os.path.realpath(root)
    for layer in layers:
        created: set[str] = set()
        with source.open(layer) as raw:
            fh: IO[bytes] = raw if raw.seekable() else io.BytesIO(raw.read())
            try:
                with _layer_tar(fh) as tar:
                    for member in _members(tar):
                        _apply(tar, member, top, owner, created)
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise ImageError(f"cannot unpack layer {layer} of {source.path}: {exc}") from exc


def _apply(tar: tarfile.TarFile, member: tarfile.TarInfo, top: str, owner: int, created: set[str]) -> None:
    name = _norm(member.name)
    if not name:
        return
    if ".." in name.split("/"):
        raise ImageError(f"layer entry {member.name!r} leaves the image")
    parent_rel, _, base = name.rpartition("/")
    parent = os.path.realpath(os.path.join(top, parent_rel))
    if not _inside(top, parent):
        raise ImageError(f"layer entry {member.name!r} resolves outside the image (through a symlink)")
    if base == _OPAQUE:
        if os.path.isdir(parent):
            for entry in os.listdir(parent):
                rel = f"{parent_rel}/{entry}" if parent_rel else entry
                if rel not in created:
                    _remove(os.path.join(parent, entry))
        return
    if base.startswith(_WH):
        rel = f"{parent_rel}/{base[len(_WH):]}" if parent_rel else base[len(_WH):]
        if rel not in created:
            _remove(os.path.join(parent, base[len(_WH):]))
        return
    if member.isdev():
        return
    target = os.path.join(parent, base)
    if os.path.lexists(target) and not (member.isdir() and os.path.isdir(target) and not os.path.islink(target)):
        _remove(target)  # never write through what a lower layer left here
    if member.islnk():
        link = os.path.realpath(os.path.join(top, _norm(member.linkname)))
        if not _inside(top, link):
            raise ImageError(f"layer entry {member.name!r}: hard link to {member.linkname!r} leaves the image")
        os.makedirs(parent, exist_ok=True)
        os.link(link, target, follow_symlinks=False)
        created.add(name)
        return
    clean = member.replace(name=os.path.relpath(target, top), uid=_shift(member.uid, owner),
                           gid=_shift(member.gid, owner), uname="", gname="", deep=False)  # fmt: skip
    os.makedirs(parent, exist_ok=True)
    tar.extract(clean, top, numeric_owner=True, filter="fully_trusted")
    created.add(name)

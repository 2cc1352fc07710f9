"""OCI import without a kernel: archives built here with tarfile (docker save and OCI layout),
layers unpacked in order, whiteouts honoured, nothing written outside the tree; capability sets."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from runtime import ContainerSpec, SpecError
from runtime.caps import CAP_NUMBERS, DOCKER_DEFAULT_CAPS, capability_set
from runtime.errors import ImageError
from runtime.oci import ImageConfig, OciSource, unpack_layers

Entry = tuple[str, str, str]  # (kind: file|dir|sym|link, name, data or link target)


def layer(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind in ("sym", "link"):
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                info.linkname = data
                tar.addfile(info)
            else:
                raw = data.encode()
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, raw: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(raw)
    tar.addfile(info, io.BytesIO(raw))


CONFIG = {"architecture": "amd64", "os": "linux",
          "config": {"Env": ["PATH=/bin", "GREETING=hello"], "Cmd": ["sh", "-c", "echo $GREETING"],
                     "WorkingDir": "/srv"}}  # fmt: skip


def docker_save(path: Path, layers: list[bytes], config: dict[str, object] = CONFIG) -> Path:
    """A `docker save`-style tarball: manifest.json, <id>.json, <n>/layer.tar."""
    raw_config = json.dumps(config).encode()
    cid = hashlib.sha256(raw_config).hexdigest()
    with tarfile.open(path, "w") as tar:
        _add(tar, f"{cid}.json", raw_config)
        names = []
        for i, data in enumerate(layers):
            names.append(f"l{i}/layer.tar")
            _add(tar, names[-1], data)
        _add(tar, "manifest.json", json.dumps([{"Config": f"{cid}.json", "RepoTags": ["t:1"], "Layers": names}]).encode())
    return path


def oci_layout(root: Path, layers: list[bytes], config: dict[str, object] = CONFIG) -> Path:
    """An OCI image layout directory with gzip layers."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(raw: bytes, media: str) -> dict[str, object]:
        digest = hashlib.sha256(raw).hexdigest()
        (blobs / digest).write_bytes(raw)
        return {"mediaType": media, "digest": f"sha256:{digest}", "size": len(raw)}

    cfg = blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    lays = [blob(gzip.compress(data), "application/vnd.oci.image.layer.v1.tar+gzip") for data in layers]
    manifest = blob(json.dumps({"schemaVersion": 2, "config": cfg, "layers": lays}).encode(),
                    "application/vnd.oci.image.manifest.v1+json")
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    return root


BASE = layer([("dir", "etc", ""), ("file", "etc/keep", "k"), ("file", "etc/gone", "g"), ("dir", "var/cache", ""),
              ("file", "var/cache/a", "a"), ("file", "var/cache/b", "b"), ("sym", "bin", "usr/bin")])
TOP = layer([("file", "etc/.wh.gone", ""), ("file", "var/cache/.wh..wh..opq", ""), ("file", "var/cache/new", "n"),
             ("file", "etc/keep", "k2"), ("file", "bin/tool", "t")])  # fmt: skip


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath, name)
            out[str(path.relative_to(root))] = os.readlink(path) if path.is_symlink() else path.read_text()
    return out


@pytest.mark.parametrize("fmt", ["docker-save", "oci-layout"])
def test_layers_in_order_with_whiteouts(tmp_path: Path, fmt: str) -> None:
    src = docker_save(tmp_path / "img.tar", [BASE, TOP]) if fmt == "docker-save" else oci_layout(tmp_path / "oci", [BASE, TOP])
    root = tmp_path / "root"
    root.mkdir()
    with OciSource(src) as source:
        config_blob, layers = source.manifest()
        unpack_layers(source, layers, root, os.getuid())
    assert ImageConfig.from_oci(json.loads(config_blob)) == ImageConfig(
        ("PATH=/bin", "GREETING=hello"), (), ("sh", "-c", "echo $GREETING"), "/srv")
    assert _tree(root) == {"etc/keep": "k2", "var/cache/new": "n", "bin": "usr/bin", "usr/bin/tool": "t"}


@pytest.mark.parametrize("evil", [
    [("sym", "etc", "/"), ],
    [("sym", "etc", "../../../..")],
    [("link", "etc/hard", "../../outside")],
])  # fmt: skip
def test_nothing_is_written_outside_the_tree(tmp_path: Path, evil: list[Entry]) -> None:
    outside = tmp_path / "outside"
    outside.write_text("host file")
    root = tmp_path / "a" / "b" / "root"
    root.mkdir(parents=True)
    first = layer([("dir", "etc", "")] if evil[0][0] == "link" else evil)
    second = layer(evil if evil[0][0] == "link" else [("file", "etc/outside", "pwned")])
    src = docker_save(tmp_path / "img.tar", [first, second])
    with OciSource(src) as source, pytest.raises(ImageError, match="outside|leaves"):
        unpack_layers(source, source.manifest()[1], root, os.getuid())
    assert outside.read_text() == "host file"
    assert not (tmp_path / "a" / "etc").exists()


def test_a_file_replaces_a_lower_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("host file")
    root = tmp_path / "root"
    root.mkdir()
    src = docker_save(tmp_path / "img.tar", [layer([("sym", "f", str(victim))]), layer([("file", "f", "mine")])])
    with OciSource(src) as source:
        unpack_layers(source, source.manifest()[1], root, os.getuid())
    assert victim.read_text() == "host file" and (root / "f").read_text() == "mine" and not (root / "f").is_symlink()


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "x.tar").write_bytes(layer([("file", "a", "b")]))
    with pytest.raises(ImageError, match="neither"), OciSource(tmp_path / "x.tar") as source:
        source.manifest()


def test_spec_images() -> None:
    assert ContainerSpec(name="c", argv=("true",), image="host").image == "host"
    assert ContainerSpec(name="c", argv=(), image="oci:/x.tar").argv == ()  # the image's Cmd
    for bad in ("ubuntu", "oci:", "oci"):
        with pytest.raises(SpecError, match="image"):
            ContainerSpec(name="c", argv=("true",), image=bad)
    with pytest.raises(SpecError, match="argv"):
        ContainerSpec(name="c", argv=(), image="host")


def test_capability_set_like_docker() -> None:
    assert capability_set() == tuple(sorted(DOCKER_DEFAULT_CAPS, key=CAP_NUMBERS.__getitem__))
    assert "NET_ADMIN" in capability_set(add=["cap_net_admin"])
    assert "NET_RAW" not in capability_set(drop=["NET_RAW"])
    assert capability_set(add=["NET_BIND_SERVICE"], drop=["ALL"]) == ("NET_BIND_SERVICE",)
    assert len(capability_set(add=["ALL"])) == 41
    with pytest.raises(SpecError, match="BOGUS"):
        capability_set(add=["BOGUS"])

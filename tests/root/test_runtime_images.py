"""Images seen from inside real containers: `host` (the host's /usr read-only, python3 runs, a
private /etc) and an OCI archive built here (two layers, whiteouts; its Env/Cmd/WorkingDir).

Fixtures (unique cgroup parents, containers deleted after each test, host unchanged) come from
test_runtime_isolation; archives are built with tarfile by test_runtime_oci's helpers.
"""
from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import test_runtime_isolation as iso

from runtime import Container, ContainerSpec, Runtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_runtime_oci import docker_save, layer, oci_layout  # noqa: E402

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates namespaces, mounts and cgroups"),
]

cgroup_parent, host_unchanged, ledger, make, rt, runtime_dirs = (
    iso.cgroup_parent, iso.host_unchanged, iso.ledger, iso.make, iso.rt, iso.runtime_dirs)
sh = iso.sh

PY_PIDS = "import os, socket; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), socket.gethostname())"


def test_host_image_runs_python3_and_sees_only_its_own_pids(make: Callable[..., Container]) -> None:
    c = make("python3", "-c", PY_PIDS, image="host", hostname="pyhost")
    assert c.wait(timeout=20) == 0, c.log_paths[1].read_text()
    assert c.log_paths[0].read_text() == "[1, 2] pyhost\n"  # init and python itself


def test_host_image_usr_read_only_etc_private(make: Callable[..., Container]) -> None:
    c = make("sleep", "1000", image="host")
    res = c.exec(["python3", "-c", "import socket; print('ok')"])
    assert res.returncode == 0 and res.stdout == "ok\n", res
    assert "Read-only file system" in c.exec(["touch", "/usr/netsim-probe"]).stderr
    assert c.exec(["mount", "-o", "remount,rw", "/usr"]).returncode != 0  # locked read-only
    assert not os.path.exists("/usr/netsim-probe")
    assert sh(c, "cat /etc/passwd").startswith("root:x:0:0:")
    assert sh(c, "cat /etc/hostname") == c.name + "\n"
    sh(c, "echo mine > /etc/motd && echo t > /tmp/t && echo v > /var/v")  # /etc, /tmp, /var private
    assert not os.path.exists("/etc/motd") or Path("/etc/motd").read_text() != "mine\n"
    assert (c.rootfs / "etc/motd").read_text() == "mine\n"
    assert sh(c, "id -u") == "0\n"


@pytest.mark.parametrize("fmt", ["docker-save", "oci-layout"])
def test_oci_archive_layers_whiteouts_and_config(make: Callable[..., Container], rt: Runtime, cgroup_parent: str,
                                                 tmp_path: Path, fmt: str) -> None:
    lower = layer([("dir", "etc", ""), ("file", "etc/keep", "k"), ("file", "etc/gone", "g"), ("dir", "var/cache", ""),
                   ("file", "var/cache/a", "a"), ("file", "var/cache/b", "b")])
    upper = layer([("file", "etc/.wh.gone", ""), ("file", "var/cache/.wh..wh..opq", ""), ("file", "var/cache/new", "n"),
                   ("file", "etc/keep", "k2")])  # fmt: skip
    layers = [_busybox_layer(Path("/bin/busybox").read_bytes()), lower, upper]
    src = docker_save(tmp_path / "img.tar", layers) if fmt == "docker-save" else oci_layout(tmp_path / "oci", layers)
    c = rt.create(ContainerSpec(name=f"c{uuid.uuid4().hex[:10]}", argv=(), image=f"oci:{src}",
                                cgroup_parent=cgroup_parent))  # no argv: the image's Cmd
    try:
        c.start()
        assert c.wait(timeout=10) == 0, c.log_paths[1].read_text()
        assert c.log_paths[0].read_text() == "hello\n"  # Cmd with the image's Env
    finally:
        c.delete()
    d = make("/bin/busybox", "sleep", "1000", image=f"oci:{src}", env={"GREETING": "spec wins"})
    run = d.exec(["/bin/busybox", "sh", "-c", "pwd; echo $GREETING; /bin/busybox ls /etc /var/cache; id -u"])
    assert run.returncode == 0, run
    assert run.stdout.split() == ["/srv", "spec", "wins", "/etc:", "hostname", "hosts", "keep", "/var/cache:", "new", "0"]
    assert d.exec(["/bin/busybox", "cat", "/etc/keep"]).stdout == "k2"  # the upper layer's version
    assert d.exec(["/bin/busybox", "stat", "-c", "%u", "/etc/keep"]).stdout == "0\n"  # root inside


def _busybox_layer(binary: bytes) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind in (("bin", tarfile.DIRTYPE), ("srv", tarfile.DIRTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = kind, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(binary), 0o755
        tar.addfile(info, io.BytesIO(binary))
        for applet in ("sh", "echo"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return buf.getvalue()

"""The fork server (runtime.forkserver): containers' processes are still children of the runtime
process, hold none of its fds, and the server never outlives its Runtime or its process.

Fixtures (unique cgroup parents, containers deleted after each test, host unchanged) come from
test_runtime_isolation.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import test_runtime_isolation as iso

from runtime import Container, ContainerSpec, Runtime

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates namespaces, mounts and cgroups"),
]

cgroup_parent, host_unchanged, ledger, make, rt, runtime_dirs = (
    iso.cgroup_parent, iso.host_unchanged, iso.ledger, iso.make, iso.rt, iso.runtime_dirs)
poll = iso.poll
REPO = Path(__file__).resolve().parents[2]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except FileNotFoundError:
        return True


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        return int(fh.read().rsplit(b")", 1)[1].split()[1])


def test_container_started_by_the_server_is_a_child_of_the_runtime(
    rt: Runtime, make: Callable[..., Container]
) -> None:
    c = make("sleep", "1000")
    server = rt._cfg.forks  # noqa: SLF001 - white box: the server must be in use
    assert server is not None and server.pid is not None and not _gone(server.pid)
    assert c.pid is not None and _ppid(c.pid) == os.getpid()  # so the runtime reaps it
    main = [p for p in c.pids() if p != c.pid]
    assert len(main) == 1
    assert sorted(os.listdir(f"/proc/{main[0]}/fd")) == ["0", "1", "2"]  # no report pipe, no log dups
    init_fds = [os.readlink(f"/proc/{c.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{c.pid}/fd") if int(fd) > 2]
    assert init_fds == [str(c.state_path / "exit_status")]
    assert c.exec(["cat", "/proc/1/cmdline"]).stdout.startswith("netsim-init")


def test_short_lived_container_reports_its_exit_code(make: Callable[..., Container]) -> None:
    c = make("sh", "-c", "exit 7")
    assert c.wait(timeout=10) == 7


def test_close_stops_the_server_and_a_later_start_restarts_it(rt: Runtime, make: Callable[..., Container]) -> None:
    make("true")
    server = rt._cfg.forks  # noqa: SLF001
    assert server is not None
    first = server.pid
    assert first is not None
    rt.close()
    assert _gone(first)
    c = make("sh", "-c", "exit 3")
    assert c.wait(timeout=10) == 3
    assert server.pid is not None and server.pid != first


def test_without_fork_server(runtime_dirs: tuple[Path, Path], cgroup_parent: str) -> None:
    state, images = runtime_dirs
    local = Runtime(state, image_dir=images, fork_server=False)
    c = local.create(ContainerSpec(name=f"c{uuid.uuid4().hex[:10]}", argv=("sh", "-c", "exit 5"),
                                   cgroup_parent=cgroup_parent))  # fmt: skip
    try:
        c.start()
        assert c.wait(timeout=10) == 5
    finally:
        c.delete()


def test_server_exits_when_its_process_is_killed(runtime_dirs: tuple[Path, Path], cgroup_parent: str) -> None:
    """SIGKILL the process holding a Runtime: its fork server goes too (no orphan); the
    container keeps running and another process can delete it."""
    state, images = runtime_dirs
    name = f"c{uuid.uuid4().hex[:10]}"
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from runtime import ContainerSpec, Runtime
        rt = Runtime(Path({str(state)!r}), image_dir=Path({str(images)!r}))
        c = rt.create(ContainerSpec(name={name!r}, argv=("sleep", "1000"), cgroup_parent={cgroup_parent!r}))
        c.start()
        print(rt._cfg.forks.pid, c.pid, flush=True)
        time.sleep(1000)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        server_pid, init_pid = (int(x) for x in proc.stdout.readline().split())
        assert not _gone(server_pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert poll(lambda: _gone(server_pid), timeout=5), "the fork server outlived its process"
        assert not _gone(init_pid)  # containers are not the server's business
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        Runtime(state, image_dir=images).get(name).delete()

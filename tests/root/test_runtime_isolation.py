"""The container runtime against the real kernel: namespaces, cgroups, rootfs, lifecycle.

Every test makes uniquely named objects (cgroup parent netsim/rtt-<hex>, netns rtt-<hex>,
container c<hex>, state dir under pytest's tmp dir) and the autouse `host_unchanged` fixture checks that the
root netns links, the host's mounts and the cgroup subtree are exactly as before.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime import Container, ContainerError, ContainerSpec, IdMap, Limits, Runtime
from runtime.caps import DOCKER_DEFAULT_CAPS
from runtime.cgroups import detect_layout
from runtime.process import INIT_TITLE

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates namespaces, mounts and cgroups"),
]

# ---- fixtures --------------------------------------------------------------------------------


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True, timeout=10).stdout
    return {" ".join(line.split()[:2]) for line in out.splitlines()}  # "1: lo:" (flags may change)


def _host_mounts() -> set[str]:
    with open("/proc/self/mountinfo") as fh:
        return {line.split()[4] for line in fh}


def _cgroup_roots() -> list[str]:
    return sorted(set(detect_layout().mounts.values()))


def _cgroup_tree() -> set[str]:
    """Every directory under <controller root>/netsim in every hierarchy."""
    found = set()
    for root in _cgroup_roots():
        for dirpath, _dirs, _files in os.walk(os.path.join(root, "netsim")):
            found.add(dirpath)
    return found


@pytest.fixture(scope="module")
def runtime_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("runtime")
    yield base / "state", base / "images"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def ledger() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def rt(runtime_dirs: tuple[Path, Path], ledger: list[tuple[str, str]]) -> Runtime:
    state, images = runtime_dirs
    return Runtime(state, image_dir=images, on_create=lambda kind, ident: ledger.append((kind, ident)))


@pytest.fixture(autouse=True)
def host_unchanged(runtime_dirs: tuple[Path, Path]) -> Iterator[None]:
    """Root netns links, our mounts and our part of the netsim cgroup subtree are as before.

    Labs of other sessions may run meanwhile, so mounts and cgroups are compared only where
    this module creates them (its tmp dir, netns rtt-*, cgroups netsim/rtt-*)."""
    base = str(runtime_dirs[0].parent)

    def ours() -> tuple[set[str], set[str]]:
        mounts = {m for m in _host_mounts() if m.startswith((base, "/run/netns/rtt-"))}
        return mounts, {d for d in _cgroup_tree() if "/rtt-" in d}

    links, (mounts, tree) = _root_links(), ours()
    yield
    assert _root_links() == links, "root netns links changed"
    after_mounts, after_tree = ours()
    assert after_mounts == mounts, "mounts left behind"
    assert after_tree == tree, "cgroups left behind"


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    """A per-test cgroup parent; the runtime leaves parents to the caller's ledger, so remove it."""
    parent = f"netsim/rtt-{uuid.uuid4().hex[:8]}"
    had_netsim = {root for root in _cgroup_roots() if os.path.isdir(os.path.join(root, "netsim"))}
    yield parent
    for root in _cgroup_roots():
        paths = [os.path.join(root, parent)] + ([] if root in had_netsim else [os.path.join(root, "netsim")])
        for path in paths:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass


@pytest.fixture
def make(rt: Runtime, cgroup_parent: str) -> Iterator[Callable[..., Container]]:
    """make(argv, start=True, **spec fields) -> Container, deleted after the test."""
    made: list[Container] = []

    def _make(*argv: str, start: bool = True, **kwargs: object) -> Container:
        name = kwargs.pop("name", None) or f"c{uuid.uuid4().hex[:10]}"
        spec = ContainerSpec(name=name, argv=argv or ("sleep", "1000"), cgroup_parent=cgroup_parent, **kwargs)  # type: ignore[arg-type]
        c = rt.create(spec)
        made.append(c)
        if start:
            c.start()
        return c

    yield _make
    errors = []
    for c in made:
        try:
            c.delete()
        except ContainerError as exc:
            errors.append(str(exc))
    assert not errors


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"rtt-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True, timeout=10)


def sh(c: Container, script: str, **kwargs: object) -> str:
    res = c.exec(["sh", "-c", script], **kwargs)  # type: ignore[arg-type]
    assert res.returncode == 0, res
    return res.stdout


def poll(fn: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.02)
    return fn()


# ---- namespaces ------------------------------------------------------------------------------


def test_pid_namespace_shows_only_container_processes(make: Callable[..., Container]) -> None:
    c = make("sleep", "1000")
    pids = sorted(int(p) for p in sh(c, "ls /proc").split() if p.isdigit())
    assert pids[:2] == [1, 2]
    assert os.getpid() not in pids and c.pid not in pids
    ps = sh(c, "ps -o pid,args")
    lines = {int(line.split()[0]): line for line in ps.splitlines()[1:]}
    assert "sleep 1000" in lines[2]
    assert lines[1].split()[1] == INIT_TITLE  # our init, not the runtime's command line
    assert os.getpid() not in lines
    # host view: the init is PID 1 in its namespace
    status = Path(f"/proc/{c.pid}/status").read_text()
    nspid = next(line for line in status.splitlines() if line.startswith("NSpid:")).split()[1:]
    assert nspid == [str(c.pid), "1"]


def test_container_is_not_in_the_callers_session(make: Callable[..., Container]) -> None:
    """A Ctrl-C sent to the caller's process group must not reach the container's init."""
    c = make()
    stat = Path(f"/proc/{c.pid}/stat").read_text().rsplit(")", 1)[1].split()
    pgrp, session = int(stat[2]), int(stat[3])
    assert pgrp != os.getpgrp() and session != os.getsid(0)
    os.killpg(pgrp, signal.SIGINT)  # the init's group: the init forwards it, sleep dies of it
    assert c.wait(timeout=5) == 128 + signal.SIGINT


def test_uts_namespace_own_hostname(make: Callable[..., Container]) -> None:
    host_before = socket.gethostname()
    c = make(hostname="inside-host")
    assert sh(c, "hostname").strip() == "inside-host"
    assert c.exec(["hostname", "other"]).returncode != 0  # as in Docker: no CAP_SYS_ADMIN
    assert sh(c, "cat /etc/hostname").strip() == "inside-host"
    # with SYS_ADMIN added (docker run --cap-add SYS_ADMIN) container root owns its UTS ns
    c2 = make(hostname="inside-host", capabilities=(*DOCKER_DEFAULT_CAPS, "SYS_ADMIN"))
    assert sh(c2, "hostname other && hostname").strip() == "other"
    assert socket.gethostname() == host_before


def test_ipc_namespace_hides_host_shm(make: Callable[..., Container]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    shmid = libc.shmget(0, 4096, 0o1000 | 0o600)  # IPC_PRIVATE, IPC_CREAT
    assert shmid >= 0, os.strerror(ctypes.get_errno())
    try:
        host_ids = {line.split()[1] for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]}
        assert str(shmid) in host_ids
        c = make()
        inside = sh(c, "cat /proc/sysvipc/shm").splitlines()[1:]
        assert inside == []
    finally:
        assert libc.shmctl(shmid, 0, None) == 0  # IPC_RMID


def test_mount_namespace_mount_inside_is_invisible_on_host(make: Callable[..., Container]) -> None:
    assert make().exec(["mount", "-t", "tmpfs", "x", "/mnt"]).returncode != 0  # Docker's default caps
    c = make(capabilities=(*DOCKER_DEFAULT_CAPS, "SYS_ADMIN"))
    sh(c, "mkdir -p /mnt/inside && mount -t tmpfs rtt-tmpfs /mnt/inside && touch /mnt/inside/f")
    assert "rtt-tmpfs" in sh(c, "cat /proc/self/mountinfo")
    host = Path("/proc/self/mountinfo").read_text()
    assert "rtt-tmpfs" not in host and "/mnt/inside" not in host
    # the container root is the overlay, not the host's /
    assert not sh(c, "ls /").count("work")
    assert sh(c, "test -e /tmp/pytest-of-root; echo $?").strip() == "1"


def test_user_namespace_root_inside_unprivileged_outside(make: Callable[..., Container]) -> None:
    c = make()
    assert sh(c, "id -u").strip() == "0"
    assert sh(c, "cat /proc/self/uid_map").split() == ["0", "100000", "65536"]
    assert sh(c, "cat /proc/self/gid_map").split() == ["0", "100000", "65536"]
    status = Path(f"/proc/{c.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["100000"] * 4
    # image files are owned by root inside; files created inside belong to 100000 on the host
    assert sh(c, "stat -c %u:%g /bin/busybox /etc/passwd").split() == ["0:0", "0:0"]
    sh(c, "echo hi > /root/made-inside")
    assert (c.rootfs / "root/made-inside").stat().st_uid == 100000
    # and container root is not host root: it cannot load modules or set the host clock
    res = c.exec(["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"])
    assert res.returncode != 0


def test_no_user_namespace_when_idmap_is_none(make: Callable[..., Container]) -> None:
    c = make(idmap=None)
    assert sh(c, "id -u").strip() == "0"
    assert sh(c, "cat /proc/self/uid_map").split() == ["0", "0", "4294967295"]
    uid_line = next(line for line in Path(f"/proc/{c.pid}/status").read_text().splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1] == "0"


def test_other_idmap_base_gets_its_own_image(make: Callable[..., Container]) -> None:
    c = make(idmap=IdMap(outside=200000, size=65536))
    assert sh(c, "stat -c %u /bin/busybox").strip() == "0"
    assert next(line for line in Path(f"/proc/{c.pid}/status").read_text().splitlines() if line.startswith("Uid:")).split()[1] == "200000"


def test_network_namespace_joined_has_only_lo(make: Callable[..., Container], netns: str) -> None:
    c = make(netns=netns)
    links = [line.split(":")[1].strip() for line in sh(c, "ip -o link").splitlines()]
    assert links == ["lo"]
    # the namespace we joined is the one the test created
    assert os.stat(f"/proc/{c.pid}/ns/net").st_ino == os.stat(netns).st_ino


def test_network_namespace_default_is_new_with_lo_up(make: Callable[..., Container]) -> None:
    c = make()
    assert os.stat(f"/proc/{c.pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    out = sh(c, "ip -o link")
    assert len(out.splitlines()) == 1 and "lo:" in out and "UP" in out
    assert "127.0.0.1" in sh(c, "ip -o addr show lo")


def test_same_tcp_port_bound_inside_and_on_host(make: Callable[..., Container]) -> None:
    with socket.socket() as host_sock:
        host_sock.bind(("127.0.0.1", 0))
        host_sock.listen()
        port = host_sock.getsockname()[1]
        # nc's stdin must stay open: busybox nc drops the connection on stdin EOF (/dev/null)
        c = make("sh", "-c", f"sleep 1000 | nc -l -p {port}")

        def listening() -> bool:
            return f":{port} " in sh(c, "netstat -ltn")

        assert poll(listening), "nc did not bind inside the container"
        assert c.status == "running"
        # a client inside reaches the container's listener, whose output lands in the log
        sh(c, f"echo through-container | nc -w 2 127.0.0.1 {port}")
        assert poll(lambda: "through-container" in c.log_paths[0].read_text())
        host_sock.settimeout(0.05)
        with pytest.raises(socket.timeout):
            host_sock.accept()


def test_net_sysctls_written_in_the_container_netns(make: Callable[..., Container], netns: str) -> None:
    key = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
    host_before = Path(key).read_text()
    c = make(netns=netns, sysctls={"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"})
    assert sh(c, f"cat {key}").strip() == "0"
    # gids print through the reader's user namespace: read it from the host side of the netns
    seen = subprocess.run(["nsenter", f"--net={netns}", "cat", "/proc/sys/net/ipv4/ping_group_range"],
                          capture_output=True, text=True, check=True, timeout=10).stdout  # fmt: skip
    assert seen.split() == ["0", "2147483647"]
    assert Path(key).read_text() == host_before
    # the effect: container root may bind port 80 and use ICMP sockets in a netns it does not own
    sh(c, "ip link set lo up 2>/dev/null; true")
    res = c.exec(["sh", "-c", "nc -l -p 80 & sleep 0.1; netstat -ltn | grep -q ':80 ' && echo bound; kill %1"])
    assert "bound" in res.stdout, res


# ---- cgroups ---------------------------------------------------------------------------------


def test_memory_limit_oom_kills_the_allocating_process(make: Callable[..., Container]) -> None:
    c = make("dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1", limits=Limits(memory_bytes=48 << 20))
    assert c.wait(timeout=20) == 128 + signal.SIGKILL
    assert c.oom_killed


def test_no_oom_without_pressure(make: Callable[..., Container]) -> None:
    c = make("dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=1", limits=Limits(memory_bytes=48 << 20))
    assert c.wait(timeout=20) == 0
    assert not c.oom_killed


def test_pids_limit_stops_a_fork_loop(make: Callable[..., Container]) -> None:
    c = make("sh", "-c", "i=0; while [ $i -lt 200 ]; do sleep 60 & i=$((i+1)); done; sleep 60", limits=Limits(pids_max=16))
    seen: list[int] = []

    def saturated() -> bool:
        seen.append(len(c.pids()))
        return "fork" in c.log_paths[1].read_text()

    assert poll(saturated, timeout=10), "the fork loop never hit the limit"
    assert max(seen) <= 16
    assert c.stats()["pids"] <= 16
    pids_dir = next(p for p in c.cgroup_paths if "/pids/" in p or detect_layout().version == 2)
    assert int(Path(pids_dir, "pids.max").read_text()) == 16


def test_cpu_quota_caps_usage(make: Callable[..., Container]) -> None:
    c = make("sh", "-c", "while :; do :; done", limits=Limits(cpu_quota=0.2))
    before = c.stats()["cpu_usage_ns"]
    t0 = time.monotonic()
    time.sleep(0.6)
    used = c.stats()["cpu_usage_ns"] - before
    elapsed = time.monotonic() - t0
    assert used <= 0.2 * elapsed * 1e9 * 1.5 + 20e6, used
    assert used > 0


def test_exec_runs_inside_the_container_cgroup(make: Callable[..., Container], cgroup_parent: str) -> None:
    c = make()
    inside = sh(c, "cat /proc/self/cgroup")
    assert f"{cgroup_parent}/{c.name}" in inside
    assert set(c.pids()) >= {c.pid}
    stats = c.stats()
    assert stats["pids"] >= 2 and stats["memory_bytes"] > 0 and stats["cpu_usage_ns"] > 0


# ---- exec, logs, lifecycle -------------------------------------------------------------------


def test_exec_input_env_workdir_and_returncode(make: Callable[..., Container]) -> None:
    c = make(env={"FROM_SPEC": "spec"}, workdir="/tmp", files={"/www/index.html": "hello"})
    res = c.exec(["sh", "-c", "cat; echo $FROM_SPEC $EXTRA; pwd; echo err >&2; exit 3"], input="in\n", env={"EXTRA": "x"})
    assert res.returncode == 3
    assert res.stdout.splitlines() == ["in", "spec x", "/tmp"]
    assert res.stderr == "err\n"
    assert res.duration_s > 0
    assert sh(c, "cat /www/index.html") == "hello"
    assert c.exec(["no-such-binary"]).returncode != 0


def test_exec_timeout_raises_and_kills(make: Callable[..., Container]) -> None:
    c = make()
    t0 = time.monotonic()
    with pytest.raises(ContainerError, match="timed out"):
        c.exec(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - t0 < 5
    assert poll(lambda: "sleep 30" not in sh(c, "ps -o args"))


def test_popen_terminate_reaches_the_process_inside(make: Callable[..., Container]) -> None:
    c = make()
    p = c.popen(["sleep", "30"], stdout=subprocess.DEVNULL)
    assert poll(lambda: "sleep 30" in sh(c, "ps -o args"))
    p.terminate()
    assert p.wait(timeout=5) != 0
    assert poll(lambda: "sleep 30" not in sh(c, "ps -o args"))


def test_main_process_output_goes_to_log_files(make: Callable[..., Container]) -> None:
    c = make("sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 5")
    assert c.wait(timeout=10) == 5
    assert c.status == "exited" and c.pid is None
    out, err = c.log_paths
    assert out.read_text() == "to-stdout\n" and err.read_text() == "to-stderr\n"


def test_start_with_bad_argv_raises_naming_it(make: Callable[..., Container]) -> None:
    c = make("/no/such/program", "--flag", start=False)
    with pytest.raises(ContainerError, match="/no/such/program"):
        c.start()
    assert c.status == "exited"
    assert c.exit_code == 127


def test_start_twice_is_an_error(make: Callable[..., Container]) -> None:
    c = make()
    with pytest.raises(ContainerError, match="running"):
        c.start()


def test_created_container_runs_nothing(make: Callable[..., Container], ledger: list[tuple[str, str]]) -> None:
    c = make(start=False, limits=Limits(memory_bytes=32 << 20))
    assert c.status == "created" and c.pid is None and c.exit_code is None
    assert c.pids() == []
    assert (c.rootfs / "bin/busybox").exists()  # the overlay is mounted
    kinds = {kind for kind, _ in ledger}
    assert kinds == {"dir", "mount", "cgroup"}
    assert ("mount", str(c.rootfs)) in ledger
    assert all(("cgroup", p) in ledger for p in c.cgroup_paths)
    mem = next(p for p in c.cgroup_paths if "memory" in p or detect_layout().version == 2)
    limit_file = "memory.limit_in_bytes" if detect_layout().version == 1 else "memory.max"
    assert int(Path(mem, limit_file).read_text()) == 32 << 20


def test_stop_forwards_sigterm_to_the_main_process(make: Callable[..., Container]) -> None:
    c = make("sh", "-c", "trap 'echo got-term; exit 7' TERM; while :; do sleep 0.05; done")
    assert poll(lambda: "sleep" in sh(c, "ps -o args"))  # the trap is set once the loop runs
    t0 = time.monotonic()
    assert c.stop(timeout=5) == 7
    assert time.monotonic() - t0 < 3
    assert c.status == "exited" and c.exit_code == 7
    assert "got-term" in c.log_paths[0].read_text()


def test_stop_plain_process_reports_signal(make: Callable[..., Container]) -> None:
    c = make("sleep", "1000")
    assert c.stop() == 128 + signal.SIGTERM


def test_stop_escalates_to_sigkill(make: Callable[..., Container]) -> None:
    c = make("sh", "-c", "trap '' TERM; while :; do sleep 0.05; done")
    assert poll(lambda: "sleep" in sh(c, "ps -o args"))  # the trap is set once the loop runs
    t0 = time.monotonic()
    assert c.stop(timeout=0.3) == 128 + signal.SIGKILL
    assert time.monotonic() - t0 < 3


def test_kill_and_wait(make: Callable[..., Container]) -> None:
    c = make()
    assert c.wait(timeout=0.05) is None
    c.kill(signal.SIGKILL)
    assert c.wait(timeout=5) == 128 + signal.SIGKILL
    with pytest.raises(ContainerError, match="exited"):
        c.kill()
    with pytest.raises(ContainerError, match="exited"):
        c.exec(["true"])


def test_init_reaps_orphans(make: Callable[..., Container]) -> None:
    c = make()
    sh(c, "for i in 1 2 3 4 5; do (sleep 0.01 &) ; done")
    time.sleep(0.3)
    states = sh(c, "cat /proc/[0-9]*/stat").splitlines()
    assert not [s for s in states if s.split(") ")[1].startswith("Z")], states


def test_delete_removes_everything_and_is_idempotent(rt: Runtime, cgroup_parent: str) -> None:
    spec = ContainerSpec(name=f"del-{uuid.uuid4().hex[:8]}", argv=("sleep", "1000"), cgroup_parent=cgroup_parent)
    c = rt.create(spec)
    c.start()
    sh(c, "sleep 100 >/dev/null 2>&1 & echo started")
    root, rootfs, cgroups = c.state_path, str(c.rootfs), c.cgroup_paths
    assert all(os.path.isdir(p) for p in cgroups)
    c.delete()
    assert not root.exists()
    assert all(not os.path.exists(p) for p in cgroups)
    assert rootfs not in _host_mounts()
    c.delete()  # again: nothing left, no error
    with pytest.raises(ContainerError):
        rt.get(spec.name)


def test_create_existing_name_fails_and_keeps_the_first(make: Callable[..., Container], rt: Runtime) -> None:
    c = make()
    with pytest.raises(ContainerError, match="exists"):
        rt.create(c.spec)
    assert c.status == "running"


def test_get_and_list_from_state_in_another_process(make: Callable[..., Container], rt: Runtime) -> None:
    c = make("sh", "-c", "trap 'exit 9' TERM; while :; do sleep 0.05; done")
    assert rt.get(c.name).pid == c.pid
    assert c.name in [x.name for x in rt.list()]
    script = textwrap.dedent(
        f"""
        from runtime import Runtime
        c = Runtime({str(rt.state_dir)!r}, image_dir={str(rt.state_dir)!r}).get({c.name!r})
        assert c.status == "running", c.status
        print(c.exec(["hostname"]).stdout.strip())
        print(c.stop(timeout=5))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [c.name, "9"]
    assert c.wait(timeout=5) == 9
    assert c.status == "exited"

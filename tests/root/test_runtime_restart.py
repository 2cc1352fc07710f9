"""Restarting a container (Container.start from "exited", Container.restart), seen from inside
it: the writable layer survives, logs accumulate, the previous run's exit code, exit status file
and OOM count are gone, its cgroup limits still hold, a new network namespace replaces the old
one, and another process (a second Runtime object) sees all of it and may drive it.

Fixtures (unique cgroup parents, containers deleted after each test, host unchanged) come from
test_runtime_isolation.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import test_runtime_isolation as iso

from runtime import Container, ContainerError, Limits, Runtime
from runtime.cgroups import detect_layout

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates namespaces, mounts and cgroups"),
]

cgroup_parent, host_unchanged, ledger, make, rt, runtime_dirs = (
    iso.cgroup_parent, iso.host_unchanged, iso.ledger, iso.make, iso.rt, iso.runtime_dirs)
sh, poll = iso.sh, iso.poll
REPO = Path(__file__).resolve().parents[2]

# Counts its runs in its writable layer: run N prints out-N / err-N; run 1 exits 5, later runs sleep.
COUNTER = ("sh", "-c", "n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); mkdir -p /data; echo $n > /data/n; "
                       "echo out-$n; echo err-$n >&2; [ $n -eq 1 ] && exit 5; exec sleep 1000")  # fmt: skip


@pytest.fixture
def netns_factory() -> Iterator[Callable[..., str]]:
    """netns_factory(*links (bridges)) -> path of a new netns holding a bridge of each name."""
    made: list[str] = []

    def _make(*links: str) -> str:
        name = f"rtt-{uuid.uuid4().hex[:10]}"
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
        made.append(name)
        for link in links:
            subprocess.run(["ip", "-n", name, "link", "add", link, "type", "bridge"], check=True, timeout=10)
        return f"/run/netns/{name}"

    yield _make
    for name in made:
        subprocess.run(["ip", "netns", "delete", name], check=True, timeout=10)


def _run_in_new_process(state_dir: Path, body: str) -> str:
    """Run `body` in a fresh interpreter with `rt` = Runtime(state_dir); its stdout."""
    script = f"from runtime import Runtime\nrt = Runtime({str(state_dir)!r})\n" + textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_restart_keeps_the_layer_appends_logs_and_resets_the_run(
        make: Callable[..., Container], ledger: list[tuple[str, str]]) -> None:
    c = make(*COUNTER)
    assert c.wait(timeout=10) == 5
    state1 = c.state_path.joinpath("state.json").read_text()
    assert c.status == "exited" and c.exit_code == 5
    assert (c.state_path / "exit_status").read_text().strip() == "5"
    announced = list(ledger)

    c.start()  # from "exited": a restart
    assert c.status == "running" and c.exit_code is None
    assert poll(lambda: sh(c, "cat /data/n").strip() == "2")  # the file written by run 1 is still there
    assert poll(lambda: c.log_paths[0].read_text() == "out-1\nout-2\n")
    assert c.log_paths[1].read_text() == "err-1\nerr-2\n"
    assert not (c.state_path / "exit_status").exists() or (c.state_path / "exit_status").read_text() == ""
    assert json.loads(state1)["pid"] != c.pid
    assert ledger == announced  # nothing new to record: the same dirs, mounts and cgroups

    with pytest.raises(ContainerError, match="it is running"):
        c.start()

    pid2 = c.pid
    c.restart(timeout=1)  # running: stop (SIGTERM: sleep dies of it) and start again
    assert c.status == "running" and c.pid not in (None, pid2) and c.exit_code is None
    assert poll(lambda: sh(c, "cat /data/n").strip() == "3")
    assert poll(lambda: c.log_paths[0].read_text() == "out-1\nout-2\nout-3\n")
    assert c.stop(timeout=2) == 128 + signal.SIGTERM
    assert (c.state_path / "exit_status").read_text().strip() == str(128 + signal.SIGTERM)


def test_restart_resets_the_oom_flag_and_keeps_the_memory_limit(make: Callable[..., Container]) -> None:
    # runs 1 and 3 allocate more than the limit; run 2 does not
    script = "if [ -e /ran ]; then rm /ran; exit 0; fi; touch /ran; dd if=/dev/zero of=/dev/null bs=96M count=1"
    c = make("sh", "-c", script, limits=Limits(memory_bytes=48 << 20))
    assert c.wait(timeout=20) == 128 + signal.SIGKILL
    assert c.oom_killed
    c.start()
    assert c.wait(timeout=20) == 0
    assert not c.oom_killed  # the previous run's OOM kill is forgotten
    mem = next(p for p in c.cgroup_paths if "memory" in p or detect_layout().version == 2)
    limit_file = "memory.limit_in_bytes" if detect_layout().version == 1 else "memory.max"
    assert int(Path(mem, limit_file).read_text()) == 48 << 20
    c.restart()
    assert c.wait(timeout=20) == 128 + signal.SIGKILL  # and the limit still holds
    assert c.oom_killed


def test_restart_into_another_netns(make: Callable[..., Container], rt: Runtime,
                                    netns_factory: Callable[..., str]) -> None:
    first, second = netns_factory("rttfirst0"), netns_factory("rttsecond0")
    c = make(netns=first)
    assert "rttfirst0" in sh(c, "ip -o link")
    c.restart(timeout=1, netns=second)
    links = [line.split(":")[1].strip() for line in sh(c, "ip -o link").splitlines()]
    assert sorted(links) == ["lo", "rttsecond0"]
    assert sorted(sh(c, "ls /sys/class/net").split()) == ["lo", "rttsecond0"]
    assert c.pid is not None and os.stat(f"/proc/{c.pid}/ns/net").st_ino == os.stat(second).st_ino
    assert c.spec.netns == second
    # the new netns is in the state file: another Runtime object (another process) sees it
    assert Runtime(rt.state_dir).get(c.name).spec.netns == second
    assert _run_in_new_process(rt.state_dir, f"print(rt.get({c.name!r}).spec.netns)").strip() == second


def test_stop_and_start_from_other_processes(make: Callable[..., Container], rt: Runtime) -> None:
    """As `netsim up`, `netsim stop` and `netsim start` do it: each step its own process, so the
    init of an earlier run is not the caller's child."""
    c = make(*COUNTER, start=False)
    c_name = c.name
    out = _run_in_new_process(rt.state_dir, f"""
        c = rt.get({c_name!r})
        c.start()
        print(c.wait(timeout=10))
    """)
    assert out.split() == ["5"]
    out = _run_in_new_process(rt.state_dir, f"""
        c = rt.get({c_name!r})
        c.start()
        print(c.status, c.pid)
    """)
    status, pid = out.split()
    assert status == "running" and c.pid == int(pid)
    # this process did not start it, yet stops it and starts it again
    other = Runtime(rt.state_dir).get(c_name)
    assert other.pid == int(pid)
    assert other.stop(timeout=2) == 128 + signal.SIGTERM
    assert c.status == "exited" and c.exit_code == 128 + signal.SIGTERM
    other.start()
    assert c.status == "running" and c.pid == other.pid and c.exit_code is None
    assert poll(lambda: sh(c, "cat /data/n").strip() == "3")
    assert poll(lambda: c.log_paths[0].read_text() == "out-1\nout-2\nout-3\n")
    out = _run_in_new_process(rt.state_dir, f"""
        c = rt.get({c_name!r})
        import time
        c.restart(timeout=2)
        for _ in range(250):  # the restarted shell counts its run
            n = c.exec(["cat", "/data/n"]).stdout.strip()
            if n == "4":
                break
            time.sleep(0.02)
        print(c.status, n)
    """)
    assert out.split() == ["running", "4"]
    assert c.status == "running" and c.exit_code is None


def test_created_container_restart_just_starts(make: Callable[..., Container]) -> None:
    c = make(start=False)
    c.restart()
    assert c.status == "running" and c.exit_code is None

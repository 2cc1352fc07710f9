"""The docker engine end to end: a real dockerd inside the lab's host namespace runs napt-basic,
the scenario passes, and its trace shows no difference from the own engine's trace.  Skipped,
with the reason, when dockerd is not installed or cannot start here.  Nothing may be left:
processes, cgroups (also Docker's own /sys/fs/cgroup/*/docker), mounts, directories.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAPT = ROOT / "scenarios" / "napt-basic.yaml"
STATE = Path(os.environ.get("NETSIM_STATE_ROOT", "/run/netsim"))
DATA_ROOT = Path(os.environ.get("NETSIM_DOCKER_ROOT", "/var/lib/netsim/docker"))
pytestmark = pytest.mark.root
LAB = f"dk{os.getpid() % 100000}"


def _netsim(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netsim.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def _docker_cgroups() -> set[str]:
    return {str(p) for p in Path("/sys/fs/cgroup").glob("*/docker")} | \
        {str(p) for p in Path("/sys/fs/cgroup").glob("docker")}


def _leftovers(lab: str) -> list[str]:
    """Whatever a docker-engine lab named `lab` could leave behind."""
    out: list[str] = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"/labs/{lab}/" in cmd or f"docker/{lab} " in cmd or f"netsim-{lab}-" in cmd:
            out.append(f"process {pid}: {cmd[:120]}")
    out += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/netsim/{lab}")]
    out += [f"dir {p}" for p in (DATA_ROOT / lab, STATE / "labs" / lab) if p.exists()]
    out += [f"netns {n}" for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else [])
            if n.startswith(f"netsim-{lab}-")]
    out += [f"mount {ln.split()[4]}" for ln in Path("/proc/self/mountinfo").read_text().splitlines() if lab in ln]
    return out


def _stop_dockerd(lab: str) -> None:
    """Only if a run died half-way: the dockerd that lab started, by its pid, then the ledger."""
    pidfile = STATE / "labs" / lab / "docker" / "dockerd.pid"
    try:
        pid = int(pidfile.read_text().strip())
        if str(DATA_ROOT / lab) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
    except (OSError, ValueError):
        pass
    if (STATE / "labs" / lab).exists():
        _netsim("down", lab, timeout=60)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    if not (shutil.which("dockerd") or os.path.exists("/usr/sbin/dockerd")):
        pytest.skip("dockerd is not installed: `sudo make setup` installs docker.io when no Docker engine is present")
    base = tmp_path_factory.mktemp("dk")
    before_docker_cgroups = _docker_cgroups()
    # what a dockerd writes outside its own roots unless netsim masks it
    before_dirs = {d: os.path.exists(d) for d in ("/run/docker", "/run/containerd", "/var/lib/netsim/docker",
                                                  "/etc/docker/key.json", "/var/lib/docker")}
    out: dict[str, object] = {}
    try:
        t0 = time.monotonic()
        p = _netsim("run", str(NAPT), "--engine", "docker", "--trace-dir", str(base / "docker"),
                    "--name", LAB, "--json")
        out["docker_s"] = time.monotonic() - t0
        if p.returncode == 3:  # the environment cannot run dockerd: say why
            pytest.skip(f"dockerd cannot start here: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.stdout[-300:]}")
        out["docker"] = (p, base / "docker")
        out["leftovers"] = _leftovers(LAB)
        t0 = time.monotonic()
        out["own"] = (_netsim("run", str(NAPT), "--trace-dir", str(base / "own"), "--name", f"{LAB}o", "--json"),
                      base / "own")
        out["own_s"] = time.monotonic() - t0
        out["docker_cgroups"] = (before_docker_cgroups, _docker_cgroups())
        out["dirs"] = (before_dirs, {d: os.path.exists(d) for d in before_dirs})
        yield out
    finally:
        _stop_dockerd(LAB)


def test_napt_basic_passes_on_docker(runs: dict[str, object]) -> None:
    p, trace = runs["docker"]  # type: ignore[misc]
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads(p.stdout)
    assert report["ok"] and report["complete"]
    m = json.loads((trace / "manifest.json").read_text())
    assert m["engine"] == "docker" and m["complete"]
    veths = {k: v["model_name"] for k, v in m["interfaces"].items() if v["role"] == "veth"}
    assert len(veths) == 2 and all(k.startswith("veth") for k in veths)
    assert set(veths) != set(veths.values())          # Docker's own names, mapped to the model's
    print(f"napt-basic: docker engine {runs['docker_s']:.1f}s, own engine {runs['own_s']:.1f}s")


def test_no_difference_between_own_and_docker(runs: dict[str, object]) -> None:
    po, own = runs["own"]  # type: ignore[misc]
    pd, docker = runs["docker"]  # type: ignore[misc]
    assert po.returncode == 0 and pd.returncode == 0, po.stdout[-2000:] + pd.stdout[-2000:]
    p = _netsim("diff", str(own), str(docker))
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-1000:]
    assert "no difference" in p.stdout


def test_nothing_is_left(runs: dict[str, object]) -> None:
    assert runs["leftovers"] == []
    before, after = runs["docker_cgroups"]  # type: ignore[misc]
    assert after == before, "Docker's own cgroups appeared"
    dirs_before, dirs_after = runs["dirs"]  # type: ignore[misc]
    assert dirs_after == dirs_before


def test_down_after_a_kept_lab_removes_everything(tmp_path: Path, runs: dict[str, object]) -> None:
    """`netsim down` from another process (as after a crash) ends dockerd, containerd, the shims
    and the containers, and removes their cgroups and data."""
    lab = f"{LAB}k"
    try:
        p = _netsim("run", str(NAPT), "--engine", "docker", "--trace-dir", str(tmp_path / "t"), "--name", lab, "--keep")
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        pidfile = STATE / "labs" / lab / "docker" / "dockerd.pid"
        assert pidfile.exists()
        assert _leftovers(lab), "the kept lab should be running"
        d = _netsim("down", lab, timeout=60)
        assert d.returncode == 0, d.stdout + d.stderr
        assert _leftovers(lab) == []
    finally:
        _stop_dockerd(lab)

"""The docker engine end to end: a real dockerd inside the lab's host namespace runs napt-basic,
the scenario passes, and its trace shows no difference from the own engine's trace.  Skipped,
with the reason, when dockerd is not installed or cannot start here.  Nothing may be left:
processes, cgroups (also Docker's own /sys/fs/cgroup/*/docker), mounts, directories.

Then the regression scenarios on both engines (`BOTH`: every one in scenarios/regression but
publish-udp, whose server runs in netsim's `host` image, which Docker has no counterpart of), one
trace per engine each, compared with `netsim diff`: no difference, or exactly the pinned ones
(`PINNED`), each a real behaviour of Docker before 28 (the pre-28 iptables layout Debian's
docker.io 20.10 writes).  The own-engine runs overlap the docker runs (one at a time each) to
keep the added time down.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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


# -- regression scenarios on both engines ---------------------------------------------------------
# internal-network was left out once for a flake (the host's connection to the internal container
# missing from one engine's final conntrack table in one of three runs); 10 paired runs since
# (2026-11-29, five of them with both engines at once) showed exactly the pinned differences.
BOTH = ["networks", "two-networks", "internal-network", "network-modes", "publish", "hairpin",
        "hairpin-off", "hairpin-nomode", "double-nat", "impaired-uplink", "icmp", "udp-mapping"]
# (step, what, where): the differences `netsim diff OWN DOCKER` shows with a pre-28 dockerd.
#   no raw PREROUTING drop in 20.10: a packet for another network's container is routed onto
#   the sender's bridge (and dropped in FORWARD by DOCKER-ISOLATION-STAGE-2) — Docker 28 drops it
#   at the bridge port, so the own engine's bridge never sees it;
#   20.10's isolation runs before the published-port accept: a container cannot reach another
#   network's published port through the host (Docker 28: DNAT, routed, MASQUERADE, answered);
#   20.10 gives a container on internal networks only a default route via the bridge: its
#   packets out go onto the bridge and are dropped there by DOCKER-ISOLATION-STAGE-1 (Docker 28:
#   no default route, "network unreachable" in the container, no packet).
_FRONT = "br-74fb07437064"      # bridge_name_for("front"); "secret" is br-39335fa846b8
PINNED: dict[str, set[tuple[str, str, str]]] = {
    "networks": {("cross-network-published", "hops", _FRONT),
                 ("across-by-published-port", "result", "sender"),
                 ("across-by-published-port", "conntrack", "tcp 172.18.0.3:*1 -> 203.0.113.2:8081"),
                 ("across-by-published-port", "hops", _FRONT),
                 ("across-by-published-port", "hops", "br-back"),
                 ("across-by-published-port", "hops", "client-a"),   # veths: by their container
                 ("across-by-published-port", "hops", "web-b")},
    "two-networks": {("front-to-duo-back", "hops", _FRONT)},
    "internal-network": {("no-way-out", "hops", "br-39335fa846b8"), ("no-way-out", "hops", "app")},
}
# the docker run's own verdict: the steps whose expectations fail on a pre-28 dockerd
PINNED_FAILING = {"networks": {"across-by-published-port"}}


def _dockerd_major() -> int:
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    try:
        out = subprocess.run([dockerd, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    m = re.search(r"version (\d+)\.", out)
    return int(m.group(1)) if m else 0


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory, runs: dict[str, object]) -> Iterator[dict[str, object]]:
    """Each scenario of BOTH once on the docker engine and once on the own engine."""
    base = tmp_path_factory.mktemp("both")
    out: dict[str, object] = {"leftovers": {}, "times": {}}
    labs: list[str] = []
    own: dict[str, Future[subprocess.CompletedProcess[str]]] = {}
    t_all = time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="own-runs") as pool:
        try:
            for i, name in enumerate(BOTH):
                scen = str(ROOT / "scenarios" / "regression" / f"{name}.yaml")
                own[name] = pool.submit(_netsim, "run", scen, "--json", "--trace-dir", str(base / f"{name}-own"),
                                        "--name", f"{LAB}o{i}", timeout=180)
                lab = f"{LAB}d{i}"
                labs.append(lab)
                t0 = time.monotonic()
                p = _netsim("run", scen, "--engine", "docker", "--json", "--trace-dir", str(base / f"{name}-docker"),
                            "--name", lab, timeout=180)
                out["times"][name] = time.monotonic() - t0  # type: ignore[index]
                out[name] = {"docker": (p, base / f"{name}-docker")}
                out["leftovers"][name] = _leftovers(lab)  # type: ignore[index]
            for name in BOTH:
                out[name]["own"] = (own[name].result(), base / f"{name}-own")  # type: ignore[index]
        finally:
            for f in own.values():
                f.cancel()
            for lab in labs:
                _stop_dockerd(lab)
    out["total_s"] = time.monotonic() - t_all
    yield out


@pytest.mark.parametrize("name", BOTH)
def test_regression_scenario_on_both_engines(name: str, pairs: dict[str, object], tmp_path: Path) -> None:
    pair = pairs[name]
    po, own = pair["own"]  # type: ignore[index]
    pd, docker = pair["docker"]  # type: ignore[index]
    assert po.returncode == 0, "own engine: " + po.stdout[-2000:] + po.stderr[-2000:]
    assert pd.returncode in (0, 1), "docker engine: " + pd.stdout[-2000:] + pd.stderr[-2000:]
    assert pairs["leftovers"][name] == []  # type: ignore[index]
    pre28 = _dockerd_major() < 28
    report = json.loads(pd.stdout)
    assert report["complete"], report["problems"]
    failing = {c["step"] for c in report["checks"] if not c["ok"]}
    assert failing == (PINNED_FAILING.get(name, set()) if pre28 else set()), failing
    assert pd.returncode == (1 if failing else 0)
    m = json.loads((docker / "manifest.json").read_text())
    assert m["engine"] == "docker"
    model = {v["model_name"] for v in m["interfaces"].values()}
    assert len(model) == len(m["interfaces"])            # every kernel interface maps to one model name

    p = _netsim("diff", "--json", str(own), str(docker))
    assert p.returncode in (0, 1), p.stderr[-1000:]
    diff = json.loads(p.stdout)
    veth_owner = {k: f"{v['container']}" for k, v in json.loads((own / "manifest.json").read_text())["interfaces"]
                  .items() if v["role"] == "veth"}
    got = {(d["step"], d["what"], veth_owner.get(d["key"], d["key"])) for d in diff["differences"]}
    want = PINNED.get(name, set()) if pre28 else set()
    assert got == want, json.dumps(diff["differences"], indent=1)[-4000:]
    assert all(not d["a"] for d in diff["differences"] if d["what"] == "hops" and d["step"] != "across-by-published-port")
    print(f"{name}: docker {pairs['times'][name]:.1f}s, {len(got)} pinned difference(s)")  # type: ignore[index]


def test_both_engines_time(pairs: dict[str, object]) -> None:
    total = pairs["total_s"]
    assert isinstance(total, float)
    print(f"regression scenarios on both engines: {total:.1f}s")
    assert total < 150


def test_restart_addresses_match_dockers_ipam() -> None:
    """The model's readdress (what `netsim stop/start` hands out) against dockerd itself: the
    same stop/start sequence on a docker-engine lab, the addresses Docker gives each time."""
    if not (shutil.which("dockerd") or os.path.exists("/usr/sbin/dockerd")):
        pytest.skip("dockerd is not installed: `sudo make setup` installs docker.io when no Docker engine is present")
    from netsim.lab.engines.docker import DockerEngine
    from netsim.lab.lab import Lab
    from netsim.model.addressing import readdress
    from netsim.scenario.loader import parse_scenario
    loaded = parse_scenario("name: rsdk\ncontainers:\n" + "".join(
        f"  - {{name: c{i}, command: [sleep, '3600']}}\n" for i in range(1, 4)), "<restart>")
    engine = DockerEngine()
    lab = Lab(loaded, name=f"{LAB}r", engine=engine)
    model = dict(lab.plan.containers)
    running = dict(model)

    def docker_ip(name: str) -> str:
        return engine.client("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).stdout.strip()

    try:
        lab.up()
        assert [docker_ip(n) for n in running] == [str(a.ip) for a in running.values()]
        # stop c1 and c2, start c2 (takes c1's address), start c1 (the next free); all stopped, c3 first
        for step in (("stop", "c1", "c2"), ("start", "c2"), ("start", "c1"), ("stop", "c1", "c2", "c3"),
                     ("start", "c3"), ("start", "c1")):
            verb, names = step[0], step[1:]
            engine.client(verb, *((("-t", "1") if verb == "stop" else ()) + names))
            for n in names:
                if verb == "stop":
                    del running[n]
                else:
                    running[n] = readdress(lab.plan, loaded.scenario, n, running)
                    assert docker_ip(n) == str(running[n].ip), (step, n)
        assert {n: str(a.ip) for n, a in running.items()} == {"c3": "172.17.0.2", "c1": "172.17.0.3"}
    finally:
        lab.down()
    assert _leftovers(f"{LAB}r") == []

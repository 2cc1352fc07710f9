"""`netsim bench runtime`: start, run `true` in and remove N fully wired containers (every
namespace, a cgroup, a veth on docker0 in a throwaway lab host namespace, an address), next to
`docker run --rm busybox true` interleaved when a Docker engine answers; then 100 containers up
and down at once."""
from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import shutil
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from runtime import Container, ContainerSpec, Runtime
from runtime.cgroups import detect_layout

from ..errors import EnvironmentProblem, NetsimError
from ..lab import netns
from ..lab.bridge import ContainerLink, HostBridge
from ..lab.ledger import STATE_ROOT
from ..model.addressing import mac_for

__all__ = ["bench_runtime"]

out = Console()
DOCKER_ANCHOR_S = 0.37  # `docker run --rm busybox true` measured on these machines (DESIGN.md)
SUBNET = ipaddress.IPv4Network("172.17.0.0/16")
GATEWAY = ipaddress.IPv4Address("172.17.0.1")


@dataclass
class _Bench:
    """A throwaway lab host namespace with docker0, a runtime and a cgroup parent."""

    tag: str
    rt: Runtime
    bridge: HostBridge
    state: Path
    serial: Iterator[int] = field(default_factory=itertools.count)  # veth names are freed lazily

    @property
    def cgroup_parent(self) -> str:
        return f"netsim/{self.tag}"

    def link(self, i: int) -> ContainerLink:
        ip = SUBNET.network_address + 2 + i
        return ContainerLink(f"netsim-{self.tag}-c{i}", f"vb{self.tag[-6:]}-{next(self.serial)}"[:15], "eth0",
                             mac_for(ip), ip, SUBNET.prefixlen, GATEWAY)  # fmt: skip

    def up(self, i: int, argv: tuple[str, ...]) -> tuple[Container, ContainerLink]:
        link = self.link(i)
        self.bridge.wire(link)
        try:
            c = self.rt.create(ContainerSpec(name=f"c{i}", argv=argv, netns=netns.netns_path(link.netns_name),
                                             cgroup_parent=self.cgroup_parent))  # fmt: skip
            c.start()
        except BaseException:
            netns.remove(link.netns_name)
            raise
        return c, link

    def down(self, made: tuple[Container, ContainerLink]) -> None:
        try:
            made[0].delete()
        finally:
            netns.remove(made[1].netns_name)

    def one(self, i: int) -> float:
        t0 = time.perf_counter()
        made = self.up(i, ("true",))
        made[0].wait(timeout=10)
        self.down(made)
        return time.perf_counter() - t0


class _DockerSide:
    """A real dockerd in a throwaway lab (the docker engine's recipe: its own netns, data-root,
    socket; never the machine's namespace), `docker run --rm` timed through its client."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        from ..lab.engines.docker import DockerEngine
        from ..lab.lab import Lab
        from ..scenario.loader import parse_scenario
        tag = uuid.uuid4().hex[:6]
        loaded = parse_scenario(f"name: benchdk{tag}\ndescription: dockerd for netsim bench runtime\n", "<bench>")
        self.engine = DockerEngine()
        self.lab = Lab(loaded, engine=self.engine, progress=progress)

    def __enter__(self) -> "_DockerSide":
        try:
            self.lab.up()
        except BaseException:
            self.lab.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.lab.down()

    def once(self) -> float:
        from ..lab.engines.docker import IMAGE
        t0 = time.perf_counter()
        self.engine.client("run", "--rm", "--network", "bridge", IMAGE, "true")
        return time.perf_counter() - t0


def docker_available() -> str | None:
    """Why the Docker side cannot run, or None when a dockerd is installed."""
    from ..lab.engines.docker import find_dockerd
    if find_dockerd() is not None:
        return None
    return "no dockerd installed (`sudo make setup` installs docker.io)"


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _parallel(fn: Callable[[int], object], count: int, workers: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="netsim-bench") as pool:
        for f in [pool.submit(fn, i) for i in range(count)]:
            f.result()
    return time.perf_counter() - t0


def _cleanup(tag: str, state: Path) -> None:
    for root in sorted(set(detect_layout().mounts.values())):
        try:
            Path(root, "netsim", tag).rmdir()
        except OSError:
            pass
    netns.remove(f"netsim-{tag}-host")
    shutil.rmtree(state, ignore_errors=True)


def run_bench(n: int, up_count: int, workers: int, docker: bool,
              progress: Callable[[str], None] = lambda _m: None) -> dict[str, object]:
    """The bench's figures; with `docker`, a dockerd runs in a throwaway lab for the whole run."""
    with contextlib.ExitStack() as stack:
        side = stack.enter_context(_DockerSide(progress)) if docker else None
        result = _run(n, up_count, workers, side, progress)
    return result


def _run(n: int, up_count: int, workers: int, side: _DockerSide | None,
         progress: Callable[[str], None]) -> dict[str, object]:
    tag = f"bench{uuid.uuid4().hex[:6]}"
    state = STATE_ROOT / "bench" / tag
    host = f"netsim-{tag}-host"
    netns.create(host)
    bridge: HostBridge | None = None
    rt: Runtime | None = None
    try:
        bridge = HostBridge(host, "docker0", GATEWAY, SUBNET.prefixlen)
        rt = Runtime(state / "runtime")
        b = _Bench(tag, rt, bridge, state)
        b.one(0)  # warm: image build and caches, not measured
        if side is not None:
            side.once()
        ours: list[float] = []
        theirs: list[float] = []
        progress(f"{n} containers one by one" + (", each next to a docker run" if side else ""))
        for i in range(n):
            ours.append(b.one(i))
            if side is not None:
                theirs.append(side.once())
        progress(f"{up_count} containers up at once, then down")
        made: dict[int, tuple[Container, ContainerLink]] = {}

        def up(i: int) -> None:
            made[i] = b.up(i, ("sleep", "3600"))

        try:
            up_s = _parallel(up, up_count, workers)
        finally:
            down_s = _parallel(lambda i: b.down(made[i]) if i in made else None, up_count, workers)
    finally:
        if bridge is not None:
            bridge.close()
        if rt is not None:
            rt.close()
        _cleanup(tag, state)
    med = statistics.median(ours)
    dmed = statistics.median(theirs) if theirs else None
    return {"n": n, "netsim_median_s": round(med, 5), "netsim_p95_s": round(_p95(ours), 5),
            "docker_median_s": None if dmed is None else round(dmed, 5),
            "docker_p95_s": None if not theirs else round(_p95(theirs), 5),
            "ratio": None if dmed is None else round(dmed / med, 1),
            "ratio_vs_anchor_0.37s": round(DOCKER_ANCHOR_S / med, 1),
            f"up_{up_count}_s": round(up_s, 3), f"down_{up_count}_s": round(down_s, 3),
            "up_100_s": round(up_s * 100 / up_count, 3), "down_100_s": round(down_s * 100 / up_count, 3),
            "workers": workers}  # fmt: skip


def bench_runtime(n: int = typer.Option(20, "--n", min=1, help="containers started one after another"),
                  up_count: int = typer.Option(100, "--up", min=1, help="containers brought up (and down) at once"),
                  workers: int = typer.Option(4, "--workers", min=1, help="threads for the up/down phase"),
                  docker: bool = typer.Option(True, "--docker/--no-docker",
                                              help="also time `docker run --rm` on a dockerd started in a "
                                                   "throwaway lab namespace (when dockerd is installed)"),
                  json_out: bool = typer.Option(False, "--json")) -> None:
    """N containers fully wired, started with `true` and removed, one by one, next to docker run."""
    import os
    if os.geteuid() != 0:
        raise EnvironmentProblem("netsim bench runtime needs root (namespaces, cgroups, mounts): run it with sudo")
    err = Console(stderr=True)
    why = docker_available() if docker else "--no-docker"
    if why is not None and docker:
        err.print(f"netsim: docker side skipped: {why}", highlight=False)
    try:
        r = run_bench(n, up_count, workers, why is None,
                      progress=lambda m: err.print(f"[cyan]·[/] {m}", highlight=False))
    except NetsimError as e:
        err.print(f"netsim: {e}", highlight=False)
        raise typer.Exit(e.exit_code) from None
    if json_out:
        print(json.dumps(r))
        return
    t = Table(title=f"runtime: {n} containers, each wired (netns, veth on docker0, address), cgroup, "
                    f"all namespaces, `true`, removed")
    for col in ("", "median", "p95", "vs docker"):
        t.add_column(col, justify="right")
    t.add_row("netsim", f"{r['netsim_median_s']:.4f}s", f"{r['netsim_p95_s']:.4f}s",
              f"{r['ratio']}x faster" if r["ratio"] else f"{r['ratio_vs_anchor_0.37s']}x vs the 0.37s anchor")
    if r["docker_median_s"] is not None:
        t.add_row("docker run --rm busybox true", f"{r['docker_median_s']:.4f}s", f"{r['docker_p95_s']:.4f}s", "1x")
    else:
        t.add_row("docker run --rm busybox true", "no engine", "-", "-")
    out.print(t)
    out.print(f"{up_count} containers (sleep) up at once: {r[f'up_{up_count}_s']:.3f}s, down: "
              f"{r[f'down_{up_count}_s']:.3f}s  ({workers} threads; goals: up <= 2s, down <= 1s for 100)")

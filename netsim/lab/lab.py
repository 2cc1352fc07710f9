"""A lab: one scenario realised in the kernel — namespaces, links, Docker's rules, the external
hosts' services, the containers — and torn down by its ledger."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import EnvironmentProblem, LabError
from ..model.addressing import Plan
from ..model.addressing import plan as make_plan
from ..scenario.loader import LoadedScenario
from ..scenario.schema import Scenario
from . import netns
from .command import in_netns, require_tool, run
from .engine import Engine
from .firewall import render_home_router_rules
from .impair import apply_link, describe
from .ledger import Ledger, existing_lab_dir, lab_dir, process_start_time
from .network import LabNames, build_network
from .teardown import teardown

__all__ = ["Lab", "check_environment"]

Progress = Callable[[str], None]


def check_environment() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem("netsim needs root to build a lab (namespaces, cgroups, "
                                 "iptables): run it with sudo")
    for tool in ("nsenter", "iptables-restore", "tcpdump", "conntrack", "busybox"):
        require_tool(tool)


class Lab:
    def __init__(self, loaded: LoadedScenario, name: str | None = None,
                 engine: Engine | None = None, progress: Progress | None = None,
                 state_root: Path | None = None) -> None:
        self.loaded = loaded
        self.scenario: Scenario = loaded.scenario
        self.name = name or self.scenario.name
        self.dir = lab_dir(self.name, state_root)
        self.ledger = Ledger(self.dir / "ledger.jsonl")
        self.names = LabNames(self.name)
        self.plan: Plan = make_plan(self.scenario)
        self.progress: Progress = progress or (lambda _m: None)
        if engine is None:
            from .engines.own import OwnEngine
            engine = OwnEngine()
        self.engine = engine
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    @classmethod
    def attach(cls, name: str, progress: Progress | None = None) -> "Lab":
        """The running lab `name` (made by `netsim up` or a run in progress), from any process:
        its scenario as it was when the lab came up.  UsageError when there is no such lab, its
        scenario file changed since, or its host namespace is gone."""
        from ..errors import UsageError
        from ..scenario import load_scenario
        from .engines import make_engine
        d = existing_lab_dir(name)
        check_environment()
        info = json.loads((d / "lab.json").read_text())
        loaded = load_scenario(str(info.get("scenario")))
        if info.get("scenario_sha256") and loaded.sha256 != info["scenario_sha256"]:
            raise UsageError(f"lab {name}: its scenario {loaded.path} changed since `netsim up`; recreate the lab")
        lab = cls(loaded, name=name, engine=make_engine(str(info.get("engine", "own"))), progress=progress)
        if not netns.exists(lab.names.host):
            raise UsageError(f"lab {name!r} is not up (its host namespace is gone): `netsim down {name}`")
        return lab

    # -- paths ------------------------------------------------------------------------------
    def netns_path(self, who: str) -> str:
        return netns.netns_path(self.names.of(who, self.plan))

    def apply_rules(self, rules: str) -> None:
        """Load iptables-restore input into the host namespace (kept in the lab dir to read)."""
        (self.dir / "iptables.rules").write_text(rules)
        run(in_netns(self.host_netns, ["iptables-restore", "-w"]), input=rules)

    def interfaces(self) -> dict[str, str]:
        """The model's name of each captured host interface -> its name in the kernel."""
        return self.engine.interfaces(self)

    @property
    def host_netns(self) -> str:
        return netns.netns_path(self.names.host)

    # -- bring up ---------------------------------------------------------------------------
    def up(self) -> None:
        check_environment()
        expressible = getattr(self.engine, "check_expressible", None)
        if expressible is not None:
            expressible(self)     # a scenario the engine cannot run: exit 2 before anything is made
        if self.ledger.path.exists():
            raise LabError(f"lab {self.name} already exists ({self.dir}): `netsim down {self.name}` "
                           "removes it, or pass another --name")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "lab.json").write_text(json.dumps({
            "name": self.name, "scenario": self.loaded.path, "scenario_sha256": self.loaded.sha256,
            "engine": self.engine.name, "owner_pid": os.getpid(), "created": time.time()}))
        self.ledger.record("dir", str(self.dir))
        t0 = time.monotonic()
        build_network(self.plan, self.names, self.ledger.record)
        if self.plan.home:
            run(in_netns(netns.netns_path(self.names.home), ["iptables-restore", "-w"]),
                input=render_home_router_rules(self.plan, self.name))
        self.progress(f"network: host NIC {self.plan.nic} {self.plan.nic_ip}, "
                      + (f"home router {self.plan.home_lan} NAPT to {self.plan.home_wan}, "
                         if self.plan.home else "")
                      + "ISP router, "
                      f"{len(self.plan.externals)} external hosts on {self.plan.upstream_subnet} "
                      f"({time.monotonic() - t0:.2f}s)")
        self._start_services()
        t0 = time.monotonic()
        self.engine.start(self)
        self._apply_host_switches()
        for link in self.scenario.links:
            self.progress(describe(link, apply_link(self, link)))
        for c in self.scenario.containers:
            if c.ready_port:
                self._wait_listening(c.name, c.ready_port, timeout=10)
        placed = [f"{n} " + ", ".join(f"{e.ip} on {e.veth}" + (f" ({e.network})" if len(self.plan.networks) > 1 else "")
                                      for e in a.endpoints) for n, a in self.plan.containers.items()]
        placed += [f"{n} network_mode {m}" for n, m in self.plan.modes.items()]
        self.progress(f"containers: {', '.join(placed)} ({time.monotonic() - t0:.2f}s)")

    def _apply_host_switches(self) -> None:
        """The scenario's host switches, whatever the engine: bridge-nf-call-iptables, and
        what Docker does with userland-proxy=false — hairpin mode on every port of the bridge
        and route_localnet on it (so 127.0.0.1:PORT can be DNATed to a container)."""
        h = self.scenario.host
        bridges = [n.bridge for n in self.plan.networks.values()] or [self.plan.bridge]
        netns.write_sysctls(self.names.host, {
            "net.bridge.bridge-nf-call-iptables": "1" if h.bridge_nf_call_iptables else "0",
            **{f"net.ipv4.conf.{br}.route_localnet": "1" for br in bridges},
        })
        iface_map = self.interfaces()
        self.set_hairpin([iface_map.get(e.veth, e.veth) for e in self.plan.endpoints()])
        self.progress(f"host: hairpin_mode {'on' if h.hairpin_mode else 'off'}, "
                      f"bridge-nf-call-iptables {int(h.bridge_nf_call_iptables)}")

    def set_hairpin(self, ports: list[str]) -> None:
        """The scenario's hairpin_mode on these bridge ports (host-side veths)."""
        if ports:
            mode = "on" if self.scenario.host.hairpin_mode else "off"
            batch = "".join(f"link set dev {p} type bridge_slave hairpin {mode}\n" for p in ports)
            run(in_netns(self.host_netns, ["ip", "-batch", "-"]), input=batch)

    def _start_services(self) -> None:
        for x in self.scenario.externals:
            for sv in x.services:
                key = f"{x.name}-{sv.kind}-{sv.port}"
                log = self.dir / "services" / f"{key}.jsonl"
                log.parent.mkdir(parents=True, exist_ok=True)
                argv = in_netns(self.netns_path(x.name),
                                [sys.executable, "-m", "netsim.probes.netprobe", "serve", sv.kind, str(sv.port)])
                self.ledger.record("process-intent", key)
                with log.open("wb") as out:
                    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
                self.ledger.record("process", p.pid, start=process_start_time(p.pid), what=key)
                self._procs[key] = p
                self._wait_ready(p, log, key)
                self.progress(f"external {x.name} {x.address}: {sv.kind} on :{sv.port}")

    def _wait_ready(self, p: subprocess.Popen[bytes], log: Path, key: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if log.exists() and b'"ready"' in log.read_bytes():
                return
            if p.poll() is not None:
                raise LabError(f"service {key} exited {p.returncode}: {log.read_text()[-300:]}")
            time.sleep(0.01)
        raise LabError(f"service {key} not ready after {timeout:g}s")

    def _wait_listening(self, container: str, port: int, timeout: float) -> None:
        pid = self.engine.pid(container)
        want = f":{port:04X} "
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines: list[str] = []
            for table in ("tcp", "tcp6"):  # busybox httpd listens on [::] (dual stack)
                try:
                    lines += Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
                except OSError:
                    pass
            if any(ln.split()[1].endswith(want.strip()) and ln.split()[3] == "0A" for ln in lines):
                return
            time.sleep(0.01)
        logs = self.engine.logs(container)
        raise LabError(f"container {container}: nothing listens on port {port} after {timeout:g}s"
                       + (f"; its output: {logs[-300:]}" if logs else ""))

    def service_log(self, external: str) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for f in sorted((self.dir / "services").glob(f"{external}-*.jsonl")):
            for line in f.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return out

    def detach(self) -> None:
        """Leave the lab running after this process exits (`netsim up`): `netsim ps` shows it as
        up, not orphaned; `netsim down LAB` removes it from any process."""
        info = json.loads((self.dir / "lab.json").read_text())
        info.update(detached=True, owner_pid=None)
        (self.dir / "lab.json").write_text(json.dumps(info))
        self._procs.clear()  # the services run on; the ledger knows them

    # -- tear down --------------------------------------------------------------------------
    def down(self) -> None:
        for p in self._procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self._procs.values():
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._procs.clear()
        errors = []
        try:
            self.engine.stop(self)
        except Exception as e:  # noqa: BLE001 - the ledger still removes everything below
            errors.append(f"engine: {e}")
        try:
            teardown(self.dir)
        except LabError as e:
            errors.append(str(e))
        if errors:
            raise LabError(f"lab {self.name}: teardown incomplete: " + "; ".join(errors))

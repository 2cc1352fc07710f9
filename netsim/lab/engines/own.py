"""The own engine: containers from netsim's runtime/ (namespaces, cgroups, overlay rootfs)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from runtime import ContainerSpec, IdMap, Limits, Runtime
from runtime.caps import capability_set
from runtime.errors import RuntimeErrorBase

from ...errors import LabError
from ..bridge import build_bridge_side
from ..engine import ExecOutcome
from ..firewall import render_rules

if TYPE_CHECKING:
    from runtime import Container

    from ...scenario.schema import Container as ScenarioContainer
    from ..lab import Lab

__all__ = ["START_WORKERS", "OwnEngine", "container_rows", "lab_runtime"]

START_WORKERS = 4


def lab_runtime(lab_dir: Path) -> Runtime | None:
    """The runtime holding a lab's containers (its state under LAB_DIR/runtime), from any process;
    None when the lab has no own-engine containers."""
    state = lab_dir / "runtime"
    if not state.is_dir():
        return None
    try:
        return Runtime(state)
    except RuntimeErrorBase as e:
        raise LabError(f"lab {lab_dir.name}: {e}") from None


def container_rows(lab_dir: Path) -> list[dict[str, object]]:
    """One row per container of a lab: name, status, pid, exit code, OOM kills, addresses (network
    -> address, as now: restarts change them, a stopped container holds none) and cgroup stats."""
    from ..lifecycle import saved_addresses
    rt = lab_runtime(lab_dir)
    addresses = saved_addresses(lab_dir)
    rows: list[dict[str, object]] = []
    for ct in rt.list() if rt is not None else []:
        row: dict[str, object] = {"name": ct.name, "status": ct.status, "pid": ct.pid,
                                  "exit_code": ct.exit_code, "oom_killed": ct.oom_killed,
                                  "addresses": addresses.get(ct.name) or {}}
        try:
            row.update(ct.stats())
        except RuntimeErrorBase:
            pass  # cgroup gone (being deleted)
        rows.append(row)
    return rows


class OwnEngine:
    name = "own"

    def __init__(self, idmap: IdMap | None = IdMap()) -> None:
        self.idmap = idmap
        self._rt: Runtime | None = None
        self._containers: dict[str, "Container"] = {}

    def start(self, lab: "Lab") -> None:
        t0 = time.monotonic()
        build_bridge_side(lab.plan, lab.names, lab.ledger.record)
        lab.apply_rules(render_rules(lab.scenario, lab.plan, lab.name))
        nets = list(lab.plan.networks.values())
        lab.progress("bridge: " + ", ".join(f"{n.bridge} {n.gateway}/{n.subnet.prefixlen}"
                                            + (" internal" if n.internal else "") for n in nets)
                     + f", {len(lab.plan.endpoints())} veths; iptables: MASQUERADE "
                     + " ".join(str(n.subnet) for n in nets if not n.internal) + f" out of {lab.plan.nic}"
                     + "".join(f", DNAT :{p.host_port}/{p.proto} -> {c.name}:{p.container_port}"
                               for c in lab.scenario.containers for p in c.publish)
                     + f" ({time.monotonic() - t0:.2f}s)")
        state = lab.dir / "runtime"
        self._rt = Runtime(state, on_create=lambda kind, ident: lab.ledger.record(kind, ident))
        rt = self._rt

        def start_one(c: "ScenarioContainer") -> None:
            try:
                # an oci: image without an explicit command runs its own Entrypoint/Cmd
                oci_default = c.image.startswith("oci:") and "command" not in c.model_fields_set
                spec = ContainerSpec(
                    name=c.name, argv=() if oci_default else tuple(c.command), image=c.image, hostname=c.name,
                    limits=Limits(memory_bytes=c.limits.memory_bytes, pids_max=c.limits.pids,
                                  cpu_quota=c.limits.cpus),
                    netns=lab.netns_path(c.name), idmap=self.idmap if lab.scenario.host.userns else None,
                    cgroup_parent=f"netsim/{lab.name}", files=dict(c.files),
                    capabilities=capability_set(c.cap_add, c.cap_drop),
                )
                ct = rt.create(spec)
                # recorded after what create() announced (dir, mount, cgroups), so a teardown
                # from the ledger deletes the container (killing it) before it rmdirs its cgroups
                lab.ledger.record("container", c.name, state_dir=str(state))
                self._containers[c.name] = ct
                ct.start()
            except RuntimeErrorBase as e:
                raise LabError(f"container {c.name}: {e}") from None

        from ..lifecycle import save_addresses
        save_addresses(lab.dir, {n: a for n, a in lab.plan.containers.items()})   # before any start
        # Starts overlap on a few threads: much of a start is waiting in the kernel (an RCU grace
        # period to move into the cgroup), which concurrent starts share.
        containers = list(lab.scenario.containers)
        if len(containers) <= 1:
            for c in containers:
                start_one(c)
            return
        with ThreadPoolExecutor(max_workers=START_WORKERS, thread_name_prefix="netsim-start") as pool:
            errors = [f.exception() for f in [pool.submit(start_one, c) for c in containers]]
        for error in errors:
            if error is not None:
                raise error

    def interfaces(self, lab: "Lab") -> dict[str, str]:
        return {name: name for name in lab.plan.captured_interfaces}  # we named them as the model does

    def _get(self, name: str) -> "Container":
        try:
            return self._containers[name]
        except KeyError:
            raise LabError(f"no running container {name!r}") from None

    def exec(self, container: str, argv: list[str], timeout: float) -> ExecOutcome:
        try:
            r = self._get(container).exec(argv, timeout=timeout)
        except RuntimeErrorBase as e:
            raise LabError(f"container {container}: exec {argv[0]}: {e}") from None
        return ExecOutcome(r.returncode, r.stdout, r.stderr, r.duration_s)

    def pid(self, container: str) -> int:
        pid = self._get(container).pid
        if pid is None:
            raise LabError(f"container {container} is not running")
        return pid

    def logs(self, container: str) -> str:
        ct = self._containers.get(container)
        if ct is None:
            return ""
        out = ""
        for path in ct.log_paths:
            try:
                out += path.read_text(errors="replace")
            except OSError:
                pass
        return out

    def stop(self, lab: "Lab") -> None:
        errors = []
        for name, ct in reversed(list(self._containers.items())):
            try:
                ct.delete()
            except RuntimeErrorBase as e:
                errors.append(f"{name}: {e}")
        self._containers.clear()
        if errors:
            raise LabError("; ".join(errors))

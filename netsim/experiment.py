"""`netsim run`: realise a scenario, run its steps under the tracer, save the trace, verify.

    loaded scenario -> predict (pure) -> Lab.up -> capture + conntrack -> steps -> trace dir
                    -> Observation (pure, from the trace dir) -> verify (pure) -> Report
The lab is always torn down in `finally` (unless `keep`), also on a failed step or Ctrl-C.
"""
from __future__ import annotations

import platform
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .errors import TraceError
from .model.predict import Prediction, predict
from .scenario.loader import LoadedScenario, parse_scenario
from .trace.records import CaptureStats
from .verify import Observation, Report, StepRecord, verify

__all__ = ["RunResult", "run_scenario", "load_observation", "verify_trace"]

Progress = Callable[[str], None]
NAT_DISAGREEMENT = "NAT table, packets vs conntrack: "


@dataclass
class RunResult:
    report: Report
    trace_dir: Path
    prediction: Prediction
    observation: Observation
    duration_s: float


def _default_trace_dir(name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("traces") / f"{name}-{stamp}"


def run_scenario(loaded: LoadedScenario, *, trace_dir: Path | None = None, lab_name: str | None = None,
                 keep: bool = False, progress: Progress | None = None, engine: str = "own") -> RunResult:
    from .lab.engines import make_engine
    from .lab.lab import Lab
    from .lab.steps import run_step
    from .trace.capture import Capture, stop_captures
    from .trace.conntrack import ConntrackWatcher, dump_table
    from .trace.store import TraceWriter, event_to_json

    say: Progress = progress or (lambda _m: None)
    t_start = time.monotonic()
    s = loaded.scenario
    prediction = predict(s)
    eng = make_engine(engine)   # a bad --engine fails before anything is made
    trace_dir = trace_dir or _default_trace_dir(lab_name or s.name)
    if trace_dir.exists() and any(trace_dir.iterdir()):
        raise TraceError(f"{trace_dir}: the trace directory is not empty; name a new one")
    trace_dir.mkdir(parents=True, exist_ok=True)
    writer = TraceWriter(trace_dir)
    lab = Lab(loaded, name=lab_name, progress=say, engine=eng)
    captures: list[Capture] = []
    watcher: ConntrackWatcher | None = None
    stats: list[CaptureStats] = []
    iface_map: dict[str, str] = {}
    started: list[dict[str, Any]] = []
    overflows = 0
    problems: list[str] = []
    try:
        lab.up()
        writer.append_event({"type": "lifecycle", "what": "lab", "phase": "up", "ts": time.time(),
                             "lab": lab.name, "engine": lab.engine.name,
                             "containers": [c.name for c in s.containers]})
        iface_map = lab.interfaces()            # model name -> kernel name
        started = _container_events(lab, iface_map, "start")
        writer.append_events(started)
        ifaces = list(iface_map.values())
        # Immediate mode: a scenario's traffic is light, and with the ring's 1 s block timeout a
        # packet in the last second before the stop (an ARP re-probe, say) could be counted by
        # the kernel yet never written — which rightly marks the trace incomplete.
        captures = [Capture(lab.host_netns, ifaces, trace_dir / "pcap", immediate=True)]
        router_ifaces = list(prediction.plan.router_captured_interfaces)
        if router_ifaces:   # the home router's public side: the second NAT
            captures.append(Capture(lab.netns_path("router"), router_ifaces, trace_dir / "pcap", immediate=True))
        watcher = ConntrackWatcher(lab.host_netns)
        watcher.start()
        for cap in captures:
            cap.start()
        say(f"tracer: capturing {', '.join(ifaces + router_ifaces)} + conntrack events")
        for st in s.steps:
            writer.append_event({"type": "step", "name": st.name, "phase": "begin", "ts": time.time()})
            result = run_step(lab, st)
            writer.append_event({"type": "step", "phase": "end", "ts": time.time(), **result.to_json()})
            say(f"step {st.name}: {st.from_} --{st.send}--> {st.to}: "
                + ("reply" if result.ok else "NO reply") + f" ({result.ended - result.started:.2f}s)")
        stats = stop_captures(captures)  # waits for the rings to drain (and conntrack to catch up)
        captures = []
        events, overflows = watcher.stop()
        watcher = None
        table = dump_table(lab.host_netns)
        writer.append_events([event_to_json(e) for e in events + table])
        if overflows:
            say(f"tracer: conntrack's event socket overflowed {overflows} time(s) (ENOBUFS): "
                "events were lost, the trace is incomplete")
    finally:
        if captures:
            try:
                stats = stop_captures(captures)
            except Exception as e:  # noqa: BLE001 - teardown goes on; the trace is incomplete
                problems.append(f"capture: {e}")
        if watcher is not None:
            try:
                watcher.stop()
            except Exception as e:  # noqa: BLE001
                problems.append(f"conntrack: {e}")
        if not keep:
            # a second Ctrl-C must not cut the teardown short
            old = signal.signal(signal.SIGINT, signal.SIG_IGN)
            running = _container_events(lab, iface_map, "stop") if started else []
            try:
                lab.down()
            finally:
                signal.signal(signal.SIGINT, old)
            stopped = time.time()
            writer.append_events([{**ev, "ts": stopped, "exited": not _alive(ev.get("pid"))}
                                  for ev in running])
            writer.append_event({"type": "lifecycle", "what": "lab", "phase": "down",
                                 "ts": time.time(), "lab": lab.name})
            say(f"lab {lab.name}: torn down")
        else:
            say(f"lab {lab.name}: kept (netsim down {lab.name})")
    interfaces = _interfaces(prediction, lab, iface_map)
    problems += _convert_captures(writer, interfaces, stats)
    drops = sum(c.kernel_drops + c.if_drops + c.not_written for c in stats)
    complete = bool(stats) and drops == 0 and overflows == 0 and not problems
    writer.write_manifest({
        "scenario": {"name": s.name, "path": loaded.path, "text": loaded.text},
        "scenario_sha256": loaded.sha256,
        "engine": lab.engine.name,
        "lab": lab.name,
        "netsim_version": __version__,
        "kernel": platform.release(),
        "tools": _tool_versions(),
        "interfaces": interfaces,
        "capture": [c.__dict__ for c in stats],
        "conntrack_overflows": overflows,
        "complete": complete,
        "problems": problems,
    })
    observation = load_observation(trace_dir)
    nat = [p for p in observation.problems if p.startswith(NAT_DISAGREEMENT)]
    say("tracer: NAT table from packets and from conntrack "
        + (f"DISAGREE: {'; '.join(n.removeprefix(NAT_DISAGREEMENT) for n in nat)}" if nat else "agree"))
    report = verify(s, prediction, observation)
    return RunResult(report, trace_dir, prediction, observation, time.monotonic() - t_start)


def _container_events(lab: Any, iface_map: dict[str, str], phase: str) -> list[dict[str, Any]]:
    """A lifecycle event per container: its pid (from the engine), address, MAC and the host
    interface it is plugged into (kernel and model name; every network's when it has several).
    ``phase`` "start" after the lab is up, "stop" just before teardown (the caller stamps the
    time and whether the process had exited after it)."""
    out: list[dict[str, Any]] = []
    now = time.time()
    for name, addr in lab.plan.containers.items():
        try:
            pid: int | None = int(lab.engine.pid(name))
        except Exception:  # noqa: BLE001 - a container that is not running has no pid
            pid = None
        ev: dict[str, Any] = {
            "type": "lifecycle", "what": "container", "phase": phase, "ts": now, "name": name,
            "pid": pid, "address": str(addr.ip), "mac": addr.mac, "ifname": addr.ifname,
            "interface": iface_map.get(addr.veth, addr.veth), "model_interface": addr.veth}
        endpoints = getattr(addr, "endpoints", ())     # a container on several networks
        if len(endpoints) > 1:
            ev["networks"] = [{"network": e.network, "address": str(e.ip), "mac": e.mac,
                               "ifname": e.ifname, "interface": iface_map.get(e.veth, e.veth)}
                              for e in endpoints]
        out.append(ev)
    return out


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _convert_captures(writer: Any, interfaces: dict[str, dict[str, object]],
                      stats: list[CaptureStats]) -> list[str]:
    """Each interface's pcap becomes a pcapng named and described from the interface map;
    a record count short of what tcpdump said it kept is a problem (the trace is incomplete)."""
    try:
        records = writer.convert_pcaps(interfaces, stats, f"Linux {platform.release()}")
    except TraceError as e:
        return [f"pcapng: {e}"]
    return [f"capture on {c.iface}: tcpdump kept {c.kept} packets, the pcap holds "
            f"{records[c.iface]}" for c in stats if c.iface in records and records[c.iface] < c.kept]


def _tool_versions() -> dict[str, str]:
    import subprocess
    out: dict[str, str] = {"python": platform.python_version()}
    for tool, argv in (("tcpdump", ["tcpdump", "--version"]), ("conntrack", ["conntrack", "--version"]),
                       ("iptables", ["iptables", "--version"])):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=5)
            out[tool] = (p.stdout or p.stderr).strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired, IndexError):
            out[tool] = "unknown"
    return out


def _interfaces(prediction: Prediction, lab: object, iface_map: dict[str, str]) -> dict[str, dict[str, object]]:
    """Interface map of the trace, by the name in the kernel; `model_name` is the model's."""
    plan = prediction.plan
    netns = getattr(lab, "host_netns", "")
    by_model: dict[str, dict[str, object]] = {
        name: {**info, "netns": netns} for name, info in plan.captured_interface_info().items()}
    for name in plan.router_captured_interfaces:
        by_model[name] = {"role": "upstream", "netns": "home router",
                          "addresses": [str(plan.home_wan)] if plan.home_wan else []}
    return {iface_map.get(name, name): {**info, "model_name": name} for name, info in by_model.items()}


def load_observation(trace_dir: Path) -> Observation:
    """Everything verify needs, from a trace directory (pure: no root, no kernel)."""
    from .trace.nat_table import bindings_from_conntrack, bindings_from_journeys, cross_check
    from .trace.store import TraceReader

    r = TraceReader(trace_dir)
    # name interfaces as the model does (an engine such as Docker picks its own veth names)
    rename = {k: str(v.get("model_name", k)) for k, v in (r.manifest.get("interfaces") or {}).items()}
    packets, journeys = r.analyse(rename=rename)
    steps: dict[str, StepRecord] = {}
    begins: dict[str, float] = {}
    for ev in r.events():
        if ev.get("type") != "step":
            continue
        if ev.get("phase") == "begin":
            begins[str(ev["name"])] = float(ev["ts"])  # type: ignore[arg-type]
        elif ev.get("phase") == "end":
            name = str(ev["name"])
            steps[name] = StepRecord(name, bool(ev.get("ok")), float(ev.get("started", begins.get(name, 0))),  # type: ignore[arg-type]
                                     float(ev.get("ended", ev["ts"])), ev.get("seen_as"))  # type: ignore[arg-type]
    m = r.manifest
    problems = list(m.get("problems", []))
    for c in m.get("capture", []):
        if c.get("kernel_drops") or c.get("if_drops"):
            problems.append(f"capture on {c['iface']} dropped {c.get('kernel_drops', 0) + c.get('if_drops', 0)} packets")
        if c.get("not_written"):
            problems.append(f"capture on {c['iface']}: {c['not_written']} packets seen by the kernel "
                            "were never written (tcpdump stopped before its ring drained)")
    if m.get("conntrack_overflows"):
        problems.append(f"conntrack event socket overflowed {m['conntrack_overflows']} time(s) "
                        "(ENOBUFS): conntrack events were lost")
    if not m.get("capture"):
        problems.append("no capture statistics: the capture did not finish")
    conntrack = r.conntrack_events()
    problems += [NAT_DISAGREEMENT + d for d in
                 cross_check(bindings_from_journeys(journeys), bindings_from_conntrack(conntrack))]
    return Observation(packets, journeys, conntrack, steps,
                       complete=bool(m.get("complete")) and not _lost(m), problems=problems)


def _lost(m: dict[str, Any]) -> bool:
    """Drops or overflows recorded in a manifest (whatever its ``complete`` says)."""
    caps = m.get("capture") or []
    return bool(m.get("conntrack_overflows")) or any(
        c.get("kernel_drops") or c.get("if_drops") or c.get("not_written")
        for c in caps if isinstance(c, dict))


def verify_trace(trace_dir: Path) -> tuple[Report, Prediction]:
    """Re-verify a saved trace against the predictions of the scenario it recorded."""
    from .trace.store import TraceReader

    m = TraceReader(trace_dir).manifest
    sc = m.get("scenario") or {}
    if "text" not in sc:
        raise TraceError(f"{trace_dir}/manifest.json: no scenario text to predict from")
    loaded = parse_scenario(sc["text"], sc.get("path", "<trace>"))
    prediction = predict(loaded.scenario)
    return verify(loaded.scenario, prediction, load_observation(trace_dir)), prediction

"""Lab lifecycle commands, registered on the main app: `netsim up`, `ps`, `exec`, `logs`, `stats`,
`stop`, `start`, `restart`, `kill`, `down`, `clean`. Every command after `up` works from any process: the lab's state lives under
/run/netsim/labs/LAB (ledger, lab.json, the runtime's per-container state)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import LabError, NetsimError

if TYPE_CHECKING:
    from runtime import Container

    from ..model.addressing import ContainerAddr

__all__ = ["register"]

from .console import err, out
from .console import fail as _fail


def _usage(message: str) -> None:
    err.print(f"netsim: {escape(message)}", highlight=False)
    raise typer.Exit(2)


def _lab_dir(lab: str) -> Path:
    from ..lab.ledger import existing_lab_dir
    try:
        return existing_lab_dir(lab)
    except NetsimError as e:
        _usage(str(e))
        raise AssertionError from None  # unreachable: _usage exits


def _container(lab: str, name: str) -> "Container":
    from runtime.errors import RuntimeErrorBase

    from ..lab.engines.own import lab_runtime
    rt = lab_runtime(_lab_dir(lab))
    if rt is None:
        _usage(f"lab {lab!r} has no containers of netsim's own engine")
        raise AssertionError  # unreachable: _usage exits
    try:
        return rt.get(name)
    except RuntimeErrorBase:
        names = ", ".join(c.name for c in rt.list()) or "none"
        _usage(f"lab {lab!r} has no container {name!r} (its containers: {names})")
        raise AssertionError from None


def _mib(value: object) -> str:
    return f"{int(value) / (1 << 20):.1f} MiB" if isinstance(value, int) else "-"


def register(app: typer.Typer) -> None:
    """Add the lab lifecycle commands to the main app."""

    @app.command()
    def up(scenario: Path = typer.Argument(..., help="scenario YAML file"),
           name: str | None = typer.Option(None, "--name", help="lab name (default: the scenario's name)")) -> None:
        """Build a lab and leave it running (then: netsim exec / logs / stats / ps / down)."""
        import time

        from ..lab.lab import Lab
        from ..scenario import load_scenario
        t0 = time.monotonic()
        try:
            loaded = load_scenario(scenario)
            lab = Lab(loaded, name=name, progress=lambda m: out.print(f"[cyan]·[/] {escape(m)}", highlight=False))
        except NetsimError as e:
            _fail(e)
            return
        try:
            lab.up()
            lab.detach()
        except (NetsimError, KeyboardInterrupt) as e:
            try:
                lab.down()
            except NetsimError as e2:
                err.print(f"netsim: {escape(str(e2))}", highlight=False)
            if isinstance(e, KeyboardInterrupt):
                raise typer.Exit(130) from None
            _fail(e)
            return
        out.print(f"lab {lab.name}: up with {len(loaded.scenario.containers)} containers "
                  f"({time.monotonic() - t0:.2f}s); `netsim down {lab.name}` removes it")

    @app.command()
    def ps(json_out: bool = typer.Option(False, "--json")) -> None:
        """Labs on this machine (from /run/netsim) and their containers, OOM kills included."""
        from ..lab.engines.own import container_rows
        from ..lab.ledger import STATE_ROOT
        from ..lab.teardown import list_labs
        labs = list_labs(STATE_ROOT)
        for lab in labs:
            try:
                lab["containers"] = container_rows(Path(str(lab["dir"])))
            except NetsimError as e:
                lab["containers"], lab["error"] = [], str(e)
            lab["state"] = "up" if lab.get("detached") else ("running" if lab["owner_alive"] else "orphaned")
        if json_out:
            print(json.dumps(labs, indent=2, default=str))
            return
        if not labs:
            out.print("no labs")
            return
        t = Table(title="netsim labs")
        for col in ("lab", "state", "scenario", "container", "status", "pid", "addresses", "oom"):
            t.add_column(col, overflow="fold")
        for lab in labs:
            rows = lab["containers"] if isinstance(lab["containers"], list) else []
            first = [str(lab["name"]), str(lab["state"]), str(lab.get("scenario") or "-")]
            if not rows:
                t.add_row(*first, "-", "-", "-", "-", "-")
            for i, r in enumerate(rows):
                status = str(r["status"]) + (f" ({r['exit_code']})" if r["status"] == "exited" else "")
                addrs = r.get("addresses")
                t.add_row(*(first if i == 0 else ["", "", ""]), str(r["name"]), status, str(r["pid"] or "-"),
                          " ".join(addrs.values()) if isinstance(addrs, dict) and addrs else "-",
                          "[red]OOM-killed[/]" if r["oom_killed"] else "-")
        out.print(t)

    @app.command("exec", context_settings={"allow_interspersed_args": False})
    def exec_(lab: str = typer.Argument(..., help="lab name"),
              container: str = typer.Argument(..., help="container name"),
              cmd: list[str] = typer.Argument(..., help="command and arguments (after --)")) -> None:
        """Run a command inside a running container (stdin, stdout, stderr attached; its exit code)."""
        from runtime.errors import RuntimeErrorBase
        if cmd and cmd[0] == "--":
            cmd = cmd[1:]
        if not cmd:
            _usage("netsim exec: name a command after --")
        ct = _container(lab, container)
        try:
            proc = ct.popen(cmd, stdin=sys.stdin, stdout=sys.stdout, stderr=sys.stderr)
        except FileNotFoundError:
            err.print(f"netsim exec: {escape(cmd[0])}: not found in container {container}", highlight=False)
            raise typer.Exit(127) from None
        except RuntimeErrorBase as e:
            err.print(f"netsim exec: {escape(str(e))}", highlight=False)
            raise typer.Exit(1) from None
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            code = proc.wait()
        raise typer.Exit(code if code >= 0 else 128 - code)

    @app.command()
    def logs(lab: str = typer.Argument(..., help="lab name"),
             container: str = typer.Argument(..., help="container name")) -> None:
        """What the container's main process wrote: stdout to stdout, stderr to stderr."""
        ct = _container(lab, container)
        stdout, stderr = ct.log_paths
        for path, stream in ((stdout, sys.stdout), (stderr, sys.stderr)):
            try:
                stream.write(path.read_text(errors="replace"))
            except FileNotFoundError:
                pass
        sys.stdout.flush()

    @app.command()
    def stats(lab: str = typer.Argument(..., help="lab name"),
              json_out: bool = typer.Option(False, "--json")) -> None:
        """Memory, CPU time and pids of every container of a lab (from its cgroups)."""
        from ..lab.engines.own import container_rows
        try:
            rows = container_rows(_lab_dir(lab))
        except NetsimError as e:
            _fail(e)
            return
        if json_out:
            print(json.dumps(rows, indent=2))
            return
        t = Table(title=f"lab {lab}")
        for col in ("container", "status", "memory", "cpu", "pids", "oom"):
            t.add_column(col, justify="left" if col in ("container", "status") else "right")
        for r in rows:
            cpu = r.get("cpu_usage_ns")
            t.add_row(str(r["name"]), str(r["status"]), _mib(r.get("memory_bytes")),
                      f"{int(cpu) / 1e9:.3f}s" if isinstance(cpu, int) else "-", str(r.get("pids", "-")),
                      "[red]OOM-killed[/]" if r["oom_killed"] else "-")
        out.print(t)

    def _addresses(addr: "ContainerAddr | None") -> str:
        return ", ".join(f"{e.ip} on {e.network}" for e in addr.endpoints) if addr is not None else "no endpoints"

    @app.command()
    def stop(lab: str = typer.Argument(..., help="lab name"),
             container: str = typer.Argument(..., help="container name"),
             time_s: float = typer.Option(10.0, "--time", "-t", min=0, help="seconds to wait after SIGTERM before SIGKILL")) -> None:
        """Stop a container (SIGTERM, then SIGKILL): its addresses go back to the networks' pools."""
        from ..lab.lab import Lab
        from ..lab.lifecycle import stop_container
        try:
            code = stop_container(Lab.attach(lab), container, time_s)
        except NetsimError as e:
            _fail(e)
            return
        out.print(f"container {container}: stopped (exit code {code}); its addresses are released", highlight=False)

    @app.command()
    def start(lab: str = typer.Argument(..., help="lab name"),
              container: str = typer.Argument(..., help="container name")) -> None:
        """Start a stopped container: each network's lowest free address, as Docker's IPAM."""
        from ..lab.lab import Lab
        from ..lab.lifecycle import current_addresses, start_container
        try:
            handle = Lab.attach(lab)
            before = handle.plan.containers.get(container)
            was = current_addresses(handle).get(container) or before
            addr = start_container(handle, container)
        except NetsimError as e:
            _fail(e)
            return
        out.print(f"container {container}: started, {_addresses(addr)}" + _changed(was, addr), highlight=False)

    @app.command()
    def restart(lab: str = typer.Argument(..., help="lab name"),
                container: str = typer.Argument(..., help="container name"),
                time_s: float = typer.Option(10.0, "--time", "-t", min=0, help="seconds to wait after SIGTERM before SIGKILL")) -> None:
        """Stop and start a container; it gets a new address when its old one was taken meanwhile."""
        from ..lab.lab import Lab
        from ..lab.lifecycle import current_addresses, restart_container
        try:
            handle = Lab.attach(lab)
            was = current_addresses(handle).get(container)
            addr = restart_container(handle, container, time_s)
        except NetsimError as e:
            _fail(e)
            return
        out.print(f"container {container}: restarted, {_addresses(addr)}" + _changed(was, addr), highlight=False)

    def _changed(was: "ContainerAddr | None", now: "ContainerAddr | None") -> str:
        if was is None or now is None or [e.ip for e in was.endpoints] == [e.ip for e in now.endpoints]:
            return ""
        return f" (was {', '.join(str(e.ip) for e in was.endpoints)})"

    @app.command()
    def kill(lab: str = typer.Argument(..., help="lab name"),
             container: str = typer.Argument(..., help="container name"),
             sig: str = typer.Option("KILL", "--signal", "-s", help="signal name or number (PID 1 forwards it)")) -> None:
        """Send a signal to a container's PID 1 (which forwards TERM, INT, HUP, ... to the main process)."""
        import signal as signals

        from runtime.errors import RuntimeErrorBase
        try:
            signum = int(sig) if sig.isdigit() else int(signals.Signals["SIG" + sig.upper().removeprefix("SIG")])
        except KeyError:
            _usage(f"netsim kill: unknown signal {sig!r} (e.g. TERM, KILL, HUP, 9)")
            return
        ct = _container(lab, container)
        try:
            ct.kill(signum)
        except RuntimeErrorBase as e:
            _fail(LabError(str(e)))
            return
        out.print(f"container {container}: sent {signals.Signals(signum).name}", highlight=False)

    @app.command()
    def down(lab: str | None = typer.Argument(None), all_: bool = typer.Option(False, "--all")) -> None:
        """Tear down a lab (or every lab) by its ledger."""
        from ..lab.ledger import STATE_ROOT, lab_dir
        from ..lab.teardown import list_labs, teardown
        names = [str(x["name"]) for x in list_labs(STATE_ROOT)] if all_ else ([lab] if lab else [])
        if not names:
            _usage("netsim down: name a lab or pass --all")
        try:
            for n in names:
                d = lab_dir(n)
                if not d.exists():
                    _usage(f"netsim down: no lab {n!r}")
                teardown(d)
                out.print(f"lab {n}: torn down")
        except NetsimError as e:
            _fail(e)

    @app.command()
    def clean() -> None:
        """Remove every lab netsim made (by ledger) — nothing else."""
        down(None, True) if _has_labs() else out.print("nothing to clean")

    def _has_labs() -> bool:
        from ..lab.ledger import STATE_ROOT
        from ..lab.teardown import list_labs
        return bool(list_labs(STATE_ROOT))

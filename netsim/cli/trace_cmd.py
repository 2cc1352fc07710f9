"""`netsim trace ...`: look into saved traces (pure: no root)."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import NetsimError

out = Console()
err = Console(stderr=True, soft_wrap=True)


def _fail(e: NetsimError) -> None:
    err.print(f"[red]netsim:[/] {escape(str(e))}", highlight=False)
    raise typer.Exit(e.exit_code)


trace_app = typer.Typer(no_args_is_help=True, help="Look into saved traces (no root needed).")


@trace_app.command("show")
def trace_show(trace_dir: Path) -> None:
    """Interfaces, capture counts, NAT transitions of a saved trace."""
    from rich.table import Table

    from ..experiment import load_observation
    from ..trace.store import TraceReader
    from .render import conntrack_table
    try:
        r = TraceReader(trace_dir)
        obs = load_observation(trace_dir)
    except NetsimError as e:
        _fail(e)
        return
    m = r.manifest
    t = Table(title=f"trace {trace_dir} — scenario {m.get('scenario', {}).get('name')}, engine {m.get('engine')}")
    for col in ("interface", "role", "kept", "kernel drops"):
        t.add_column(col)
    stats = {c["iface"]: c for c in m.get("capture", [])}
    for name, info in m.get("interfaces", {}).items():
        c = stats.get(name, {})
        t.add_row(name, str(info.get("role", "")), str(c.get("kept", "?")), str(c.get("kernel_drops", "?")))
    out.print(t)
    out.print(conntrack_table(obs.conntrack))
    out.print(f"{len(obs.packets)} packets, {len(obs.journeys)} journeys; complete: {obs.complete}")

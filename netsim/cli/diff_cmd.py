"""`netsim diff TRACE_A TRACE_B`: the NAT transitions of two traces, normalised and compared
(pure: no root).  Exit 0 when they agree, 1 when they differ, 2 when an argument is not a trace."""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import NetsimError

__all__ = ["register"]

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("diff")
    def diff(trace_a: Path = typer.Argument(..., help="a trace directory"),
             trace_b: Path = typer.Argument(..., help="another trace directory"),
             json_out: bool = typer.Option(False, "--json", help="print the differences as JSON")) -> None:
        """Compare two traces' NAT-table transitions and hop tuples, step by step, after
        normalising interface names, MACs, timestamps and ephemeral ports."""
        from ..diff import diff_traces
        try:
            r = diff_traces(trace_a, trace_b)
        except NetsimError as e:
            err.print(f"[red]netsim:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(e.exit_code) from None
        if json_out:
            out.print_json(json.dumps({
                "same": r.same, "a": {"path": r.a.path, "engine": r.a.engine},
                "b": {"path": r.b.path, "engine": r.b.engine}, "notes": r.notes,
                "differences": [d.__dict__ for d in r.differences]}))
            raise typer.Exit(0 if r.same else 1)
        out.print(f"A: {escape(r.a.path)} (engine {r.a.engine})\nB: {escape(r.b.path)} (engine {r.b.engine})",
                  highlight=False)
        for note in r.notes:
            out.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
        if r.same:
            conns = sum(len(c) for c in r.a.conntrack.values())
            paths = sum(len(h) for h in r.a.hops.values())
            out.print(f"[green]no difference[/]: {len(r.a.steps)} steps, {conns} conntrack connections, "
                      f"{paths} interface tuples alike", highlight=False)
            raise typer.Exit(0)
        for d in r.differences:
            out.print(escape(str(d)), highlight=False)
        out.print(f"[red]{len(r.differences)} difference(s)[/]", highlight=False)
        raise typer.Exit(1)

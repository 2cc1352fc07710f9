"""Lab lifecycle commands: `netsim ps`, `down`, `clean` (registered on the main app)."""
from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import NetsimError

out = Console()
err = Console(stderr=True, soft_wrap=True)


def _fail(e: NetsimError) -> None:
    err.print(f"[red]netsim:[/] {escape(str(e))}", highlight=False)
    raise typer.Exit(e.exit_code)


def register(app: typer.Typer) -> None:
    """Add the lab lifecycle commands to the main app."""

    @app.command()
    def ps() -> None:
        """Labs on this machine (from /run/netsim)."""
        from ..lab.ledger import STATE_ROOT
        from ..lab.teardown import list_labs
        labs = list_labs(STATE_ROOT)
        if not labs:
            out.print("no labs")
        for lab in labs:
            out.print(f"{lab['name']}\tscenario={lab.get('scenario')}\towner_pid={lab.get('owner_pid')}"
                      f"\t{'running' if lab['owner_alive'] else 'orphaned'}")


    @app.command()
    def down(lab: str | None = typer.Argument(None), all_: bool = typer.Option(False, "--all")) -> None:
        """Tear down a lab (or every lab) by its ledger."""
        from ..lab.ledger import STATE_ROOT, lab_dir
        from ..lab.teardown import list_labs, teardown
        names = [str(x["name"]) for x in list_labs(STATE_ROOT)] if all_ else ([lab] if lab else [])
        if not names:
            err.print("netsim down: name a lab or pass --all")
            raise typer.Exit(2)
        try:
            for n in names:
                d = lab_dir(n)
                if not d.exists():
                    err.print(f"netsim down: no lab {n!r}")
                    raise typer.Exit(2)
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

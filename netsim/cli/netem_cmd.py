"""`netsim netem LAB LINK ...`: change a running lab's link impairments (tc netem/tbf, random
loss), as a scenario's `links:` block declares them — `netsim up` keeps a lab running.

LINK is `nic` (the Docker host's uplink), `wan` (the home router's public side) or a
container's name (its eth0).  The new settings replace the link's old ones; `--clear` removes
them."""
from __future__ import annotations

import typer
from pydantic import ValidationError

from ..errors import NetsimError, UsageError

__all__ = ["register"]

from .console import fail as _fail
from .console import out


def change_link(lab_name: str, at: str, rate: str | None, loss: float | None, delay: str | None,
                jitter: str | None, clear: bool) -> str:
    """Apply (or clear) one link's impairments on a running lab; returns what was done."""
    from ..lab.impair import apply_link, clear_link, describe
    from ..lab.lab import Lab
    from ..lab.ledger import existing_lab_dir
    from ..scenario.schema import Link

    existing_lab_dir(lab_name)     # an unknown lab before the options: exit 2 either way
    if clear and any(v is not None for v in (rate, loss, delay, jitter)):
        raise UsageError("--clear takes no other option")
    if not clear and all(v is None for v in (rate, loss, delay)):
        raise UsageError("give at least one of --rate, --loss, --delay (or --clear)")
    if jitter is not None and delay is None:
        raise UsageError("--jitter needs --delay")
    try:
        link = Link(at=at, rate=rate, loss=loss, delay=delay, jitter=jitter)
    except ValidationError as e:
        first = e.errors()[0]
        raise UsageError(f"--{first['loc'][0]}: {first['msg'].removeprefix('Value error, ')}") from None
    lab = Lab.attach(lab_name)
    plan = lab.plan
    if at not in ("nic", "wan") and at not in plan.containers:
        known = ", ".join(["nic"] + (["wan"] if plan.home else []) + list(plan.containers))
        raise UsageError(f"unknown link {at!r} (links of lab {lab_name}: {known})")
    if at == "wan" and not plan.home:
        raise UsageError("'wan' is the home router's public side: this lab has no home router")
    if clear:
        clear_link(lab, at)
        return f"link {at}: impairments cleared"
    return describe(link, apply_link(lab, link))


def register(app: typer.Typer) -> None:
    @app.command()
    def netem(lab: str = typer.Argument(..., help="lab name (`netsim ps`)"),
              link: str = typer.Argument(..., help="nic | wan | CONTAINER"),
              rate: str | None = typer.Option(None, "--rate", help="e.g. 10mbit (tc tbf)"),
              loss: float | None = typer.Option(None, "--loss", help="percent of packets dropped at random"),
              delay: str | None = typer.Option(None, "--delay", help="e.g. 20ms (tc netem; without sch_netem, a netfilter-queue delayer)"),
              jitter: str | None = typer.Option(None, "--jitter", help="e.g. 5ms (needs --delay)"),
              clear: bool = typer.Option(False, "--clear", help="remove the link's impairments")) -> None:
        """Change a running lab's link impairments (replacing the link's old ones)."""
        try:
            out.print(change_link(lab, link, rate, loss, delay, jitter, clear), highlight=False)
        except NetsimError as e:
            _fail(e)

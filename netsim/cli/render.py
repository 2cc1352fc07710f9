"""Rich renderings of predictions, NAT transitions and reports."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..experiment import NAT_DISAGREEMENT
from ..model.predict import Prediction
from ..trace.records import ConntrackEvent
from ..verify import Report

__all__ = ["prediction_table", "conntrack_table", "report_table", "expectations_table", "hops_table",
           "verdict_line"]


def prediction_table(p: Prediction) -> Table:
    t = Table(title=f"model: {p.scenario} — predicted path and NAT per step", show_lines=False)
    for col in ("step", "dir", "interface", "tuple", "nat"):
        t.add_column(col)
    for sp in p.steps:
        first = True
        for h in sp.forward + sp.reply:
            t.add_row(sp.step if first else "", h.direction, h.iface, str(h.tuple),
                      ",".join(sp.nat) if first else "")
            first = False
        if first:
            t.add_row(sp.step, "", "", str(sp.flow), "no captured hop")
    return t


_PROTO_NAMES = {"1": "icmp", "2": "igmp", "6": "tcp", "17": "udp", "58": "icmpv6"}


def _tuple(t: Any) -> str:
    return f"{t.src}:{t.sport} -> {t.dst}:{t.dport}"


def conntrack_table(events: list[ConntrackEvent], title: str = "NAT table transitions (conntrack, observed)") -> Table:
    t = Table(title=title)
    for col in ("t+s", "event", "proto", "original", "reply", "nat", "state", "timeout"):
        t.add_column(col)
    live = [e for e in events if e.kind != "DUMP"]
    t0 = min((e.ts for e in live), default=0.0)
    for e in live:
        nat = "+".join(k for k, on in (("DNAT", e.dnat), ("SNAT", e.snat)) if on) or "-"
        t.add_row(f"{e.ts - t0:.3f}", e.kind, _PROTO_NAMES.get(e.original.proto, e.original.proto), _tuple(e.original), _tuple(e.reply),
                  nat, e.state or ",".join(e.status), "" if e.timeout is None else str(e.timeout))
    return t


def report_table(r: Report, only_expectations: bool = False) -> Table:
    """Every check: the scenario's expectations, then the model's hops and conntrack entries."""
    t = Table(title="verdict: expectation / model vs observation")
    for col in ("step", "check", "expected", "predicted", "observed", ""):
        t.add_column(col, overflow="fold")
    for c in r.checks:
        if only_expectations and c.kind != "expect":
            continue
        mark = "[green]PASS[/]" if c.ok else "[red]FAIL[/]"
        what = c.what if c.kind == "expect" else f"model: {c.what}"
        t.add_row(c.step, what, c.expected or "-", c.predicted, c.observed, mark)
    return t


def expectations_table(r: Report) -> Table:
    t = Table(title="expectations (scenario) — expected / predicted by the model / observed")
    for col in ("step", "expectation", "expected", "predicted", "observed", ""):
        t.add_column(col, overflow="fold")
    for c in r.checks:
        if c.kind == "expect":
            t.add_row(c.step, c.what, c.expected, c.predicted, c.observed,
                      "[green]PASS[/]" if c.ok else "[red]FAIL[/]")
    return t


def hops_table(r: Report) -> Table:
    t = Table(title="model vs kernel — each hop's tuple and the conntrack entry")
    for col in ("step", "where", "predicted", "observed", ""):
        t.add_column(col, overflow="fold")
    last = ""
    for c in r.checks:
        if c.kind != "model":
            continue
        t.add_row(c.step if c.step != last else "", c.what, c.predicted, c.observed,
                  "[green]ok[/]" if c.ok else "[red]DIFFERS[/]")
        last = c.step
    return t


def verdict_line(console: Console, r: Report) -> None:
    """The verdict: PASS/FAIL with each failed check, the trace's completeness and, whatever
    the verdict, any disagreement between the NAT table seen in the packets and conntrack's."""
    n_exp = sum(1 for c in r.checks if c.kind == "expect")
    n_model = len(r.checks) - n_exp
    bad = r.failed
    nat = [p.removeprefix(NAT_DISAGREEMENT) for p in r.problems if p.startswith(NAT_DISAGREEMENT)]
    other = [p for p in r.problems if not p.startswith(NAT_DISAGREEMENT)]
    if not r.complete:
        console.print("[yellow]trace INCOMPLETE[/]: " + escape("; ".join(other or nat or ["see manifest"])))
    if nat:
        console.print(f"[yellow]NAT table: packets and conntrack DISAGREE[/] ({len(nat)})")
        for d in nat:
            console.print(f"  [yellow]≠[/] {escape(d)}")
    if r.ok:
        console.print(f"[bold green]PASS[/] {r.scenario}: {n_exp} expectations hold, "
                      f"{n_model} model checks match the kernel")
    else:
        console.print(f"[bold red]FAIL[/] {r.scenario}: {len(bad)} of {len(r.checks)} checks failed")
        for c in bad:
            console.print(f"  [red]✗[/] {c.step}: {c.what}: expected {c.expected or c.predicted}, "
                          f"observed {c.observed}")

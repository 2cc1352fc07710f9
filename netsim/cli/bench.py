"""`netsim bench ...`: measurements side by side with their anchors, in one run."""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks, side by side with their anchors (root).")
out = Console()


@bench_app.command("tracer")
def bench_tracer(count: int = typer.Option(100_000, "--count", help="UDP datagrams in the burst"),
                 analysis: Path | None = typer.Option(None, "--analysis",
                                                         help="also time pcap -> journeys on this trace dir"),
                 tcpdump: bool = typer.Option(True, "--tcpdump/--no-tcpdump",
                                              help="also capture the same burst as plain tcpdump -w would"),
                 json_out: bool = typer.Option(False, "--json")) -> None:
    """Capture a UDP burst through a router on every interface of the path: sent vs kept."""
    from ..lab.lab import check_environment
    from ..trace.bench import analysis_rate, capture_burst
    check_environment()
    ours = capture_burst(count)
    plain = {r.iface: r for r in capture_burst(count, buffer_kib=2048, drain_s=0.0)} if tcpdump else {}
    rate = analysis_rate(analysis) if analysis else None
    rows = [{"name": r.iface, "sent": r.sent, "kept": r.matched, "kernel_drops": r.kernel_drops,
             "not_written": r.not_written,
             "tcpdump_kept": plain[r.iface].matched if r.iface in plain else None} for r in ours]
    if json_out:
        print(json.dumps({"count": count, "interfaces": rows, "analysis_packets_per_s": rate}))
        return
    t = Table(title=f"tracer: a {count:,}-datagram UDP burst, captured on each interface of the path")
    for col in ("interface", "sent", "kept (netsim)", "kernel drops", "not written", "kept (plain tcpdump)"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(str(r["name"]), f"{r['sent']:,}", f"{r['kept']:,}", str(r["kernel_drops"]),
                  str(r["not_written"]), "-" if r["tcpdump_kept"] is None else f"{r['tcpdump_kept']:,}")
    out.print(t)
    if rate is not None:
        out.print(f"analysis: {rate:,.0f} packets/s from pcap to journeys")

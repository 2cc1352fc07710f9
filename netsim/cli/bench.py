"""`netsim bench ...`: measurements side by side with their anchors, in one run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import NetsimError

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks, side by side with their anchors (root).")
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)


@bench_app.command("tracer")
def bench_tracer(count: int = typer.Option(200_000, "--count", help="UDP datagrams in the burst"),
                 analysis: bool = typer.Option(False, "--analysis",
                                               help="only time the offline analysis (pcap -> journeys)"),
                 trace: Path | None = typer.Option(None, "--trace",
                                                   help="with --analysis: analyse this saved trace "
                                                        "(no root) instead of a fresh burst"),
                 keep_trace: Path | None = typer.Option(None, "--keep-trace",
                                                        help="save the burst's trace directory here"),
                 runs: int = typer.Option(3, "--runs", help="analysis runs (the median is reported)"),
                 tcpdump: bool = typer.Option(True, "--tcpdump/--no-tcpdump",
                                              help="capture the same burst with plain tcpdump -w too"),
                 json_out: bool = typer.Option(False, "--json")) -> None:
    """A UDP burst through a NAPT path, captured on 5 interfaces by netsim and by plain tcpdump
    at the same time (sent vs kept), then analysed offline (packets/s from pcap to journeys)."""
    import os
    import tempfile

    from ..trace.bench import analysis_rate, capture_burst
    try:
        burst = None
        classic = None
        with tempfile.TemporaryDirectory(prefix="netsim-bench-") as tmp:
            target = trace
            if target is None or not analysis:
                from ..lab.lab import check_environment
                check_environment()
                target = keep_trace or Path(tmp) / "trace"
                burst = capture_burst(count, plain_tcpdump=tcpdump, trace_dir=target,
                                      classic_dir=Path(tmp) / "classic")
            load = os.getloadavg()
            rate = analysis_rate(target, runs=runs)
            if burst is not None and burst.classic_trace_dir is not None:
                # the same packets in tcpdump's classic pcaps (the version-1 layout)
                classic = analysis_rate(burst.classic_trace_dir, runs=runs, anchors=False)
    except NetsimError as e:
        err.print(f"[red]netsim:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(e.exit_code) from None
    rows = [{"name": r.name, "netns": r.netns, "sent": r.sent, "iface_packets": r.iface_packets,
             "kept": r.kept, "kernel_drops": r.kernel_drops, "not_written": r.not_written,
             "tcpdump_kept": r.tcpdump_kept, "tcpdump_kernel_drops": r.tcpdump_kernel_drops}
            for r in (burst.interfaces if burst and not analysis else [])]
    if json_out:
        print(json.dumps({"count": count if burst else None,
                          "send_rate": round(burst.send_rate) if burst else None,
                          "lossless": burst.lossless if burst and not analysis else None,
                          "interfaces": rows,
                          "analysis_packets_per_s": round(rate.packets_per_s),
                          "analysis_container": rate.container,
                          "analysis_pcap_packets_per_s":
                              round(classic.packets_per_s) if classic else None,
                          "pcapng_conversion": {
                              "records": burst.convert_records, "seconds": burst.convert_s,
                              "ms_per_100k_records": burst.convert_ms_per_100k} if burst else None,
                          "loadavg_1m": load[0],
                          "analysis": rate.as_dict(),
                          "trace_dir": str(keep_trace or trace or "")}))
        return
    if burst is not None and not analysis:
        t = Table(title=f"tracer capture: a {burst.sent:,}-datagram UDP burst at "
                        f"{burst.send_rate:,.0f}/s, each interface captured by netsim and by "
                        f"plain `tcpdump -w` at the same time")
        for col in ("interface", "netns", "sent", "iface counters", "kept (netsim)",
                    "kernel drops", "not written", "kept (tcpdump -w)", "tcpdump kernel drops"):
            t.add_column(col, justify="right")
        for r in burst.interfaces:
            t.add_row(r.name, r.netns, f"{r.sent:,}", f"{r.iface_packets:,}", f"{r.kept:,}",
                      str(r.kernel_drops), str(r.not_written),
                      "-" if r.tcpdump_kept is None else f"{r.tcpdump_kept:,}",
                      "-" if r.tcpdump_kernel_drops is None else str(r.tcpdump_kernel_drops))
        out.print(t)
        out.print("[green]lossless: kept = sent on every interface[/]" if burst.lossless
                  else "[red]NOT lossless: see kept / drops above[/]")
        out.print(f"pcap -> pcapng: {burst.convert_records:,} records in {burst.convert_s:.3f} s "
                  f"({burst.convert_ms_per_100k:.0f} ms per 100k)")
    a = Table(title=f"tracer analysis: {rate.packets:,} packets -> {rate.journeys:,} journeys "
                    f"(median of {rate.runs} runs; load average {load[0]:.2f} on "
                    f"{os.cpu_count()} cores when it began)")
    a.add_column("stage")
    a.add_column("packets/s", justify="right")
    f = rate.container
    a.add_row(f"netsim: {f} -> journeys (end to end)", f"{rate.packets_per_s:,.0f}")
    a.add_row(f"netsim: {f} -> packets (decode)", f"{rate.decode_per_s:,.0f}")
    a.add_row("netsim: packets -> journeys", f"{rate.journeys_per_s:,.0f}")
    a.add_row(f"netsim: {f} -> journeys + every hop's changes", f"{rate.with_hops_per_s:,.0f}")
    if classic is not None:
        a.add_row(f"netsim: {classic.container} -> journeys (same packets, tcpdump's files)",
                  f"{classic.packets_per_s:,.0f}")
        a.add_row(f"netsim: {classic.container} -> packets (decode)", f"{classic.decode_per_s:,.0f}")
    for name, value in rate.anchors.items():
        a.add_row(f"anchor: {name.removesuffix('_per_s').replace('_', ' ')}", f"{value:,.0f}")
    out.print(a)


from .bench_runtime import bench_runtime  # noqa: E402

bench_app.command("runtime")(bench_runtime)

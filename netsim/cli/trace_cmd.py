"""`netsim trace ...`: look into saved traces (pure: no root)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import NetsimError, UsageError
from .console import fail as _fail
from .console import out

trace_app = typer.Typer(no_args_is_help=True, help="Look into saved traces (no root needed).")


def _ep(addr: str, port: int) -> str:
    return f"{addr}:{port}"


def _tuple_text(t: Any) -> str:
    if t.proto == "icmp":
        return f"{t.src} -> {t.dst} id={t.sport}"
    return f"{t.src}:{t.sport} -> {t.dst}:{t.dport}"


def _interfaces_table(trace_dir: Path, m: dict[str, Any], per_iface: Counter[str]) -> Table:
    t = Table(title=f"interfaces — trace {trace_dir}: scenario {m.get('scenario', {}).get('name')}, "
                    f"engine {m.get('engine')}, kernel {m.get('kernel')}, format {m.get('format_version')}")
    for col in ("interface", "model name", "role", "container", "addresses", "kept", "received",
                "kernel drops", "if drops", "not written", "IPv4 decoded"):
        t.add_column(col, justify="right" if col in ("kept", "received", "kernel drops", "if drops",
                                                       "not written", "IPv4 decoded") else "left")
    stats = {c["iface"]: c for c in m.get("capture", [])}
    for name, info in (m.get("interfaces") or {}).items():
        c = stats.get(name, {})
        model = str(info.get("model_name", name))
        addrs = ", ".join(info.get("addresses") or []) or str(info.get("peer_address", "") and
                                                               f"peer {info.get('peer_address')}")

        def n(key: str, c: dict[str, Any] = c) -> str:
            v = c.get(key)
            if v is None:
                return "?"
            return f"[red]{v}[/]" if key != "kept" and key != "received" and v else str(v)
        t.add_row(name, model if model != name else "", str(info.get("role", "")),
                  str(info.get("container", "")), addrs, n("kept"), n("received"), n("kernel_drops"),
                  n("if_drops"), n("not_written"), str(per_iface.get(model, 0)))
    return t


def _flows_table(journeys: Sequence[Any], t0: float, rank: dict[str, int]) -> Table:
    """One row per flow: journeys grouped by the tuple seen on their innermost interface (a
    container's veth before the bridge before the NIC), so both directions and both sides of
    a NAT fold into one row."""
    flows: dict[tuple[object, ...], dict[str, Any]] = {}
    for j in journeys:
        inner = min(j.packets, key=lambda p: rank.get(p.iface, len(rank))).tuple
        a, b = (inner.src, inner.sport), (inner.dst, inner.dport)
        key = (inner.proto, *sorted((a, b)))
        f = flows.get(key)
        if f is None:
            f = flows[key] = {"tuple": j.first.tuple, "inner": inner, "fwd": 0, "rev": 0,
                              "packets": 0, "ifaces": set(), "first": j.first.ts,
                              "last": j.last.ts, "nat": set()}
        f["fwd" if a == (f["inner"].src, f["inner"].sport) else "rev"] += 1
        f["packets"] += len(j.packets)
        f["ifaces"].update(p.iface for p in j.packets)
        f["last"] = max(f["last"], j.last.ts)
        for h in j.hops[1:]:
            f["nat"].update(k for k in h.changed if k != "ttl")
    t = Table(title=f"flows ({len(flows)}): journeys by their tuple on the innermost interface, "
                    "both directions")
    for col in ("t+s", "last t+s", "proto", "first seen as", "journeys →", "journeys ←",
                "appearances", "interfaces", "rewritten"):
        t.add_column(col)
    for f in sorted(flows.values(), key=lambda f: f["first"]):
        t.add_row(f"{f['first'] - t0:.3f}", f"{f['last'] - t0:.3f}", f["tuple"].proto,
                  _tuple_text(f["tuple"]), str(f["fwd"]), str(f["rev"]), str(f["packets"]),
                  ",".join(sorted(f["ifaces"])), ",".join(sorted(f["nat"])) or "-")
    return t


def _ranks(m: dict[str, Any]) -> dict[str, int]:
    """Model interface name -> path rank by its role (veth 0, bridge 1, nic 2, ...)."""
    from ..trace.journeys import ROLE_RANK
    return {str(info.get("model_name", name)): ROLE_RANK.get(str(info.get("role", "")), len(ROLE_RANK))
            for name, info in (m.get("interfaces") or {}).items()}


def _nat_table(rows: Sequence[Any], title: str, t0: float) -> Table:
    t = Table(title=title)
    for col in ("kind", "proto", "inside", "outside", "remote", "state", "first t+s", "last t+s"):
        t.add_column(col)
    for b in rows:
        t.add_row(b.kind, b.proto, _ep(*b.inside), _ep(*b.outside), _ep(*b.remote), b.state or "-",
                  f"{b.first_seen - t0:.3f}", f"{b.last_seen - t0:.3f}")
    return t


@trace_app.command("show")
def trace_show(trace_dir: Path,
               transitions: bool = typer.Option(True, "--transitions/--no-transitions",
                                                help="also list every conntrack event")) -> None:
    """Interfaces (capture counts, drops), flows, the NAT table from packets and from conntrack
    (with their disagreements), and whether the trace is complete."""
    from ..experiment import NAT_DISAGREEMENT, load_observation
    from ..trace.nat_table import bindings_from_conntrack, bindings_from_journeys
    from ..trace.store import TraceReader
    from .render import conntrack_table
    try:
        r = TraceReader(trace_dir)
        obs = load_observation(trace_dir)
    except NetsimError as e:
        _fail(e)
        return
    m = r.manifest
    t0 = min((p.ts for p in obs.packets[:1]), default=0.0)
    out.print(_interfaces_table(trace_dir, m, Counter(p.iface for p in obs.packets)))
    out.print(_flows_table(obs.journeys, t0, _ranks(m)))
    from_packets = bindings_from_journeys(obs.journeys)
    from_ct = bindings_from_conntrack(obs.conntrack)
    out.print(_nat_table(from_packets, "NAT table from packets (rewrites seen between hops)", t0))
    out.print(_nat_table(from_ct, "NAT table from conntrack (events + final dump)", t0))
    disagreements = [p.removeprefix(NAT_DISAGREEMENT) for p in obs.problems
                     if p.startswith(NAT_DISAGREEMENT)]
    if disagreements:
        out.print(f"[red]NAT tables disagree[/] ({len(disagreements)}):")
        for d in disagreements:
            out.print(f"  [red]✗[/] {escape(d)}", highlight=False)
    else:
        out.print(f"[green]NAT tables agree[/]: {len(from_packets)} rows from packets, "
                  f"{len(from_ct)} from conntrack")
    if transitions:
        out.print(conntrack_table(obs.conntrack))
    drops = sum(int(c.get("kernel_drops", 0)) + int(c.get("if_drops", 0)) + int(c.get("not_written", 0))
                for c in m.get("capture", []))
    out.print(f"drops: capture {drops}, conntrack overflows {m.get('conntrack_overflows', 0)}")
    others = [p for p in obs.problems if not p.startswith(NAT_DISAGREEMENT)]
    state = "[green]complete[/]" if obs.complete else "[red]INCOMPLETE[/]"
    out.print(f"{len(obs.packets)} packets, {len(obs.journeys)} journeys; trace {state}"
              + (": " + escape("; ".join(others)) if others else ""))


def _flow_filter(spec: str) -> list[tuple[str, str]]:
    """``udp 172.17.0.3:40000 :80`` -> [("proto","udp"), ("ep","172.17.0.3:40000"), ("port","80")]."""
    terms: list[tuple[str, str]] = []
    for word in spec.replace(",", " ").split():
        if word.lower() in ("tcp", "udp", "icmp"):
            terms.append(("proto", word.lower()))
        elif word.startswith(":") and word[1:].isdigit():
            terms.append(("port", word[1:]))
        elif ":" in word:
            addr, _, port = word.rpartition(":")
            if not port.isdigit():
                raise UsageError(f"--flow: {word!r} is not IP:PORT")
            terms.append(("ep", f"{addr}:{port}"))
        elif word.count(".") == 3:
            terms.append(("ip", word))
        else:
            raise UsageError(f"--flow: {word!r} is not tcp|udp|icmp, IP, IP:PORT or :PORT")
    return terms


def _matches(j: Any, terms: Iterable[tuple[str, str]]) -> bool:
    tuples = {p.tuple for p in j.packets}
    for kind, value in terms:
        if kind == "proto":
            ok = j.first.tuple.proto == value
        elif kind == "ip":
            ok = any(value in (t.src, t.dst) for t in tuples)
        elif kind == "port":
            ok = any(int(value) in (t.sport, t.dport) for t in tuples)
        else:
            ok = any(value in (f"{t.src}:{t.sport}", f"{t.dst}:{t.dport}") for t in tuples)
        if not ok:
            return False
    return True


def _changed_text(changed: dict[str, tuple[object, object]]) -> str:
    return ", ".join(f"{k} {a}→{b}" for k, (a, b) in changed.items())


@trace_app.command("journeys")
def trace_journeys(trace_dir: Path,
                   flow: str = typer.Option("", "--flow",
                                            help="only journeys matching all of: tcp|udp|icmp, IP, "
                                                 "IP:PORT, :PORT (any hop, either end)"),
                   limit: int = typer.Option(50, "--limit", help="show at most this many (0: all)"),
                   nat_only: bool = typer.Option(False, "--nat", help="only journeys rewritten on the way")
                   ) -> None:
    """Each packet hop by hop: when and where it was seen, its tuple there, what changed."""
    from ..experiment import load_observation
    try:
        terms = _flow_filter(flow)
        obs = load_observation(trace_dir)
    except NetsimError as e:
        _fail(e)
        return
    t0 = min((p.ts_ns for p in obs.packets[:1]), default=0)
    chosen = [j for j in obs.journeys if _matches(j, terms)
              and (not nat_only or any(k != "ttl" for h in j.hops for k in h.changed))]
    shown = chosen if limit <= 0 else chosen[:limit]
    for j in shown:
        first = j.first
        extra = f" flags {first.tcp_flags}" if first.tcp_flags else (
            f" type {first.icmp_type}" if first.icmp_type >= 0 else "")
        t = Table(title=f"journey {j.id}: {first.tuple.proto} {_tuple_text(first.tuple)}{extra}, "
                        f"ip id {first.ip_id}, {first.length} bytes, {len(j.packets)} hops",
                  title_justify="left")
        for col in ("t+ms", "Δµs", "interface", "tuple here", "ttl", "changed since previous hop"):
            t.add_column(col, justify="right" if col in ("t+ms", "Δµs", "ttl") else "left")
        prev_ns = first.ts_ns
        for h in j.hops:
            p = h.packet
            t.add_row(f"{(p.ts_ns - t0) / 1e6:.3f}", f"{(p.ts_ns - prev_ns) / 1e3:.1f}", p.iface,
                      _tuple_text(p.tuple), str(p.ttl), escape(_changed_text(h.changed)) or "-")
            prev_ns = p.ts_ns
        out.print(t)
    out.print(f"{len(shown)} of {len(chosen)} matching journeys shown "
              f"({len(obs.journeys)} in the trace)" + ("; --limit 0 shows all" if len(shown) < len(chosen) else ""))

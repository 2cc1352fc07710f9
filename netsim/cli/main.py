"""`netsim` — run, validate, simulate and verify Docker-style NAT scenarios.

Exit codes: 0 all expectations hold; 1 an expectation or a model check failed; 2 invalid input
or usage; 3 the environment cannot run it (not root, missing tool).
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import typer
from rich.markup import escape

from ..errors import NetsimError
from ..scenario import json_schema, load_scenario
from .console import err, out
from .console import fail as _fail

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Real containers on a docker0 bridge with NAPT, traced and verified against a model.")


def _register_subcommands() -> None:
    """Command groups live in their own modules: lab_cmd (up/down/ps/...), trace_cmd, bench."""
    from .bench import bench_app
    from .diff_cmd import register as register_diff
    from .lab_cmd import register as register_lab
    from .trace_cmd import trace_app
    app.add_typer(trace_app, name="trace")
    app.add_typer(bench_app, name="bench")
    register_lab(app)
    register_diff(app)
    __import__("netsim.cli.netem_cmd", fromlist=["register"]).register(app)


_register_subcommands()


@app.command()
def run(scenario: Path = typer.Argument(..., help="scenario YAML file"),
        trace_dir: Path | None = typer.Option(None, "--trace-dir", help="where to save the trace (default traces/NAME-TIME)"),
        name: str | None = typer.Option(None, "--name", help="lab name (default: the scenario's name)"),
        keep: bool = typer.Option(False, "--keep", help="leave the lab up after the run"),
        engine: str = typer.Option("own", "--engine", help="own (netsim's runtime) or docker (a real dockerd)"),
        json_out: bool = typer.Option(False, "--json", help="print the report as JSON")) -> None:
    """Build the lab, run the steps under the tracer, verify, tear down."""
    from ..experiment import run_scenario
    from .render import conntrack_table, expectations_table, hops_table, verdict_line

    main_pid = os.getpid()

    def _interrupt(sig: int, _frame: object) -> None:
        # Forked helpers (pyroute2's netns workers, which are stopped with SIGTERM) inherit
        # this handler: they must just die, never unwind into this code.
        if os.getpid() != main_pid:
            os._exit(128 + sig)
        raise KeyboardInterrupt  # SIGTERM tears the lab down like Ctrl-C
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        loaded = load_scenario(scenario)
        say = (lambda m: err.print(f"[cyan]·[/] {escape(m)}", highlight=False)) if json_out else \
              (lambda m: out.print(f"[cyan]·[/] {escape(m)}", highlight=False))
        say(f"scenario {loaded.scenario.name}: {len(loaded.scenario.containers)} containers, "
            f"{len(loaded.scenario.externals)} external hosts, {len(loaded.scenario.steps)} steps")
        result = run_scenario(loaded, trace_dir=trace_dir, lab_name=name, keep=keep, progress=say, engine=engine)
    except NetsimError as e:
        _fail(e)
        return
    except KeyboardInterrupt:
        err.print("netsim: interrupted; the lab was torn down")
        raise typer.Exit(130) from None
    r = result.report
    if json_out:
        print(json.dumps({**r.to_json(), "trace_dir": str(result.trace_dir),
                          "duration_s": round(result.duration_s, 3)}, indent=2))
    else:
        out.print(conntrack_table(result.observation.conntrack))
        out.print(hops_table(r))
        out.print(expectations_table(r))
        out.print(f"trace saved: {result.trace_dir}  (netsim trace show {result.trace_dir})")
        verdict_line(out, r)
        out.print(f"wall time {result.duration_s:.2f}s")
    raise typer.Exit(0 if r.ok else 1)


@app.command()
def validate(scenario: Path) -> None:
    """Check a scenario file; one line per problem, exit 2 when invalid."""
    try:
        loaded = load_scenario(scenario)
    except NetsimError as e:
        _fail(e)
        return
    s = loaded.scenario
    out.print(f"{scenario}: valid ({len(s.containers)} containers, {len(s.externals)} externals, "
              f"{len(s.steps)} steps)")


@app.command()
def schema() -> None:
    """Print the JSON Schema of scenario files."""
    print(json.dumps(json_schema(), indent=2))


@app.command()
def simulate(scenario: Path, json_out: bool = typer.Option(False, "--json")) -> None:
    """What the model predicts for a scenario (no root, no kernel)."""
    from ..model.predict import predict
    from .render import prediction_table
    try:
        p = predict(load_scenario(scenario).scenario)
    except NetsimError as e:
        _fail(e)
        return
    if json_out:
        print(json.dumps([{"step": sp.step, "receiver": sp.receiver, "nat": list(sp.nat),
                           "reply_expected": sp.reply_expected, "values": sp.values,
                           "hops": [{"iface": h.iface, "direction": h.direction, "tuple": str(h.tuple)}
                                    for h in sp.forward + sp.reply],
                           "conntrack": [str(t) for t in sp.conntrack] if sp.conntrack else None}
                          for sp in p.steps], indent=2))
    else:
        out.print(prediction_table(p))


@app.command()
def verify(trace_dir: Path) -> None:
    """Re-verify a saved trace against its scenario's predictions (offline, no root)."""
    from ..experiment import verify_trace
    from .render import expectations_table, hops_table, verdict_line
    try:
        report, _ = verify_trace(trace_dir)
    except NetsimError as e:
        _fail(e)
        return
    out.print(hops_table(report))
    out.print(expectations_table(report))
    verdict_line(out, report)
    raise typer.Exit(0 if report.ok else 1)


def main() -> None:
    try:
        app()
    except NetsimError as e:
        err.print(f"netsim: {e}", highlight=False)
        sys.exit(e.exit_code)

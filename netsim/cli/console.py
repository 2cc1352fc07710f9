"""The CLI's two consoles and its one way of failing: one line on stderr, the error's exit code."""
from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import NetsimError

__all__ = ["out", "err", "fail"]

# Wide enough for tuples when the output is a file or CI log; the terminal's width otherwise.
out = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True, soft_wrap=True)


def fail(e: NetsimError) -> NoReturn:
    err.print(f"[red]netsim:[/] {escape(str(e))}", highlight=False)
    raise typer.Exit(e.exit_code)

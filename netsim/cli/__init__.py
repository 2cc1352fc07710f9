"""The `netsim` command line (typer + rich): thin — parse, call the library, render."""

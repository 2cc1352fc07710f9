"""Throwaway network namespaces for the tracer's own root tests, benchmarks and fixtures.

Not the lab (netsim.lab builds real scenarios): a few uniquely named namespaces
(``nstr-<random>-<role>``) joined by veth pairs, created with iproute2 *inside* the namespaces
(a veth is created in one lab namespace and its peer moved to another; nothing ever appears in
the root namespace) and always deleted by :meth:`Testbed.close`, which also ends the processes
it started, by pid.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from netsim.errors import CommandError, EnvironmentProblem
from netsim.trace.capture import require_tools

__all__ = ["Netns", "Testbed"]

NETNS_DIR = Path("/run/netns")


class Netns:
    """One namespace of a testbed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = str(NETNS_DIR / name)

    def argv(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net={self.path}", *argv]

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"


class Testbed:
    """A set of namespaces; use as a context manager so they are always removed."""

    __test__ = False        # not a pytest test class despite its name

    def __init__(self, prefix: str = "nstr") -> None:
        if os.geteuid() != 0:
            raise EnvironmentProblem("building test namespaces needs root: run as root")
        require_tools("ip", "nsenter")
        self.tag = f"{prefix}-{secrets.token_hex(3)}"
        self.namespaces: dict[str, Netns] = {}
        self._procs: list[subprocess.Popen[bytes]] = []

    # -- plumbing -------------------------------------------------------------------------
    def run(self, argv: Sequence[str], timeout: float = 20.0, check: bool = True,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  input=input_text, check=False)
        except subprocess.TimeoutExpired as exc:
            raise CommandError(argv, None, f"timed out after {timeout} s") from exc
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stderr or proc.stdout)
        return proc

    def add(self, role: str) -> Netns:
        ns = Netns(f"{self.tag}-{role}")
        self.namespaces[role] = ns      # recorded before creation: close() removes it
        self.run(["ip", "netns", "add", ns.name])
        self.ip(ns, "link set lo up")
        self.sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        return ns

    def ip(self, ns: Netns, *commands: str) -> None:
        """Run iproute2 commands in ``ns`` (one ``ip -batch`` call)."""
        self.run(["ip", "-n", ns.name, "-batch", "-"], input_text="\n".join(commands) + "\n")

    def sysctl(self, ns: Netns, *settings: str) -> None:
        self.run(ns.argv("sysctl", "-q", "-w", *settings))

    def iptables(self, ns: Netns, *rule: str) -> None:
        self.run(ns.argv("iptables", "-w", *rule))

    def veth(self, a: Netns, a_if: str, b: Netns, b_if: str) -> None:
        """A veth pair created inside ``a`` with its peer moved straight into ``b``."""
        self.ip(a, f"link add {a_if} type veth peer name {b_if} netns {b.name}",
                f"link set {a_if} up")
        self.ip(b, f"link set {b_if} up")

    def addr(self, ns: Netns, iface: str, *cidrs: str) -> None:
        self.ip(ns, *(f"addr add {c} dev {iface}" for c in cidrs))

    def mac(self, ns: Netns, iface: str) -> str:
        out = self.run(["ip", "-n", ns.name, "-o", "link", "show", iface]).stdout
        parts = out.split()
        return parts[parts.index("link/ether") + 1] if "link/ether" in parts else ""

    # -- processes ------------------------------------------------------------------------
    def popen_python(self, ns: Netns, code: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``python -c code args...`` in ``ns``; ended by pid in close() if still running."""
        proc = subprocess.Popen(ns.argv(sys.executable, "-c", code, *args),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self._procs.append(proc)
        return proc

    def python(self, ns: Netns, code: str, *args: str, timeout: float = 30.0) -> str:
        """Run ``python -c code`` in ``ns`` to completion; return its stdout."""
        return self.run(ns.argv(sys.executable, "-c", code, *args), timeout=timeout).stdout

    def wait(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> str:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            raise CommandError([str(a) for a in proc.args], None,  # type: ignore[union-attr]
                               f"timed out after {timeout} s") from exc
        if proc.returncode != 0:
            raise CommandError([str(a) for a in proc.args],  # type: ignore[union-attr]
                               proc.returncode, err.decode(errors="replace"))
        return out.decode(errors="replace")

    # -- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        errors: list[str] = []
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            try:
                proc.communicate(timeout=5)
            except Exception as exc:   # noqa: BLE001 - teardown is best effort, reported below
                errors.append(f"pid {proc.pid}: {exc}")
        self._procs = []
        for ns in reversed(list(self.namespaces.values())):
            res = self.run(["ip", "netns", "del", ns.name], check=False)
            if res.returncode != 0 and "No such file" not in res.stderr:
                errors.append(f"{ns.name}: {res.stderr.strip()}")
        self.namespaces = {}
        if errors:
            raise CommandError(["testbed", "close"], 1, "; ".join(errors))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

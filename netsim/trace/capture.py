"""Lossless live capture: one tcpdump per interface, inside the interface's network namespace.

tcpdump (libpcap, TPACKET_V3 mmap ring) keeps every packet of a 100,000-packet burst where a
Python sniffer keeps a few percent, so capture happens here and decoding later (decode.py).

Each tcpdump runs as ``nsenter --net=<netns_path> tcpdump -i IF -w out_dir/IF.pcap ...``.
nsenter (without ``--fork``) execs tcpdump in place, so the pid we hold is tcpdump's own and
SIGINT reaches it directly.  ``-Z root`` stops tcpdump from switching to the ``tcpdump`` user,
who could not write into a root-owned trace directory.  Per-interface capture (never
``-i any``) keeps the Ethernet header.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from netsim.errors import CommandError, EnvironmentProblem, TraceError
from netsim.trace.records import CaptureStats


def unblock_interrupts() -> None:
    """In the child before exec: the parent blocks SIGINT/SIGTERM around Popen, and a blocked
    mask would be inherited (tcpdump/conntrack could then not be stopped with SIGINT)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


__all__ = [
    "RING_BLOCK_TIMEOUT_S",
    "Capture",
    "parse_tcpdump_stats",
    "require_tools",
    "stop_captures",
    "unblock_interrupts",
    "tcpdump_argv",
]

# tcpdump opens libpcap with a 1000 ms timeout, which becomes the TPACKET_V3 block retire
# timeout: a partly filled ring block reaches tcpdump only when it fills or that timer fires.
# tcpdump leaves its loop on SIGINT without reading the rest of the ring, so the last packets
# (up to a second's worth) are counted by the kernel as received but never written — unless
# stop() waits for the timer first.  Measured: 100,000-datagram burst, SIGINT right after it,
# 848 of 100,000 missing on the sender's NIC with kernel_drops 0; with the wait, none missing.
RING_BLOCK_TIMEOUT_S = 1.0

_STAT_PATTERNS = {
    "kept": re.compile(r"^(\d+) packets? captured", re.MULTILINE),
    "received": re.compile(r"^(\d+) packets? received by filter", re.MULTILINE),
    "kernel_drops": re.compile(r"^(\d+) packets? dropped by kernel", re.MULTILINE),
    "if_drops": re.compile(r"^(\d+) packets? dropped by interface", re.MULTILINE),
}


def require_tools(*names: str) -> dict[str, str]:
    """Resolve each tool on PATH or raise EnvironmentProblem saying how to install it."""
    packages = {"tcpdump": "tcpdump", "conntrack": "conntrack", "nsenter": "util-linux",
                "iptables": "iptables", "ip": "iproute2", "sysctl": "procps"}
    found: dict[str, str] = {}
    for name in names:
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
        if path is None:
            raise EnvironmentProblem(
                f"{name} not found on PATH: install it (apt-get install {packages.get(name, name)})")
        found[name] = path
    return found


def tcpdump_argv(tcpdump: str, iface: str, out_file: Path, buffer_kib: int,
                 snaplen: int, bpf_filter: str = "", immediate: bool = False,
                 plain: bool = False) -> list[str]:
    """The tcpdump command line used for one interface (without the nsenter prefix).

    ``plain`` is the benchmark's anchor: ``tcpdump -i IF -w FILE`` as people type it, with
    tcpdump's defaults (2 MiB buffer, microsecond stamps, buffered writes); only ``-Z root``
    is added so it can write into a root-owned directory (it does not change the capture).
    """
    if plain:
        return [tcpdump, "-i", iface, "-w", str(out_file), "-Z", "root",
                *([bpf_filter] if bpf_filter else [])]
    argv = [tcpdump, "-i", iface, "-w", str(out_file), "-n", "-U", "-B", str(buffer_kib),
            "-s", str(snaplen), "-Z", "root", "-Q", "inout",
            "--time-stamp-precision=nano"]
    if immediate:
        argv.append("--immediate-mode")
    if bpf_filter:
        argv.append(bpf_filter)
    return argv


def parse_tcpdump_stats(iface: str, stderr: str) -> CaptureStats | None:
    """Parse tcpdump's closing statistics; None when it printed none (it was killed)."""
    values: dict[str, int] = {}
    for key, pattern in _STAT_PATTERNS.items():
        found = pattern.findall(stderr)
        if found:
            values[key] = int(found[-1])
    if "kept" not in values:
        return None
    kept, received = values["kept"], values.get("received", 0)
    drops = values.get("kernel_drops", 0)
    return CaptureStats(iface=iface, kept=kept, received=received, kernel_drops=drops,
                        if_drops=values.get("if_drops", 0),
                        not_written=max(0, received - kept - drops))


@dataclass
class _Running:
    iface: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    listening: threading.Event = field(default_factory=threading.Event)   # or stderr closed
    saw_listening: bool = False
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if "listening on" in line:
                self.saw_listening = True
                self.listening.set()
        self.listening.set()        # EOF: wake start() so it can report the failure

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


class Capture:
    """tcpdump on each of ``ifaces`` of one network namespace, writing ``out_dir/<iface>.pcap``."""

    def __init__(self, netns_path: str, ifaces: Sequence[str], out_dir: Path,
                 buffer_kib: int = 32768, snaplen: int = 262144, bpf_filter: str = "",
                 immediate: bool = False, drain_s: float | None = None,
                 plain: bool = False) -> None:
        if not ifaces:
            raise TraceError("Capture needs at least one interface")
        if len(set(ifaces)) != len(ifaces):
            raise TraceError(f"Capture: duplicate interface names in {list(ifaces)}")
        self.netns_path = netns_path
        self.ifaces = tuple(ifaces)
        self.out_dir = Path(out_dir)
        self.buffer_kib = buffer_kib
        self.snaplen = snaplen
        self.bpf_filter = bpf_filter
        self.immediate = immediate
        self.plain = plain
        self.drain_s = drain_s if drain_s is not None else (
            0.05 if immediate else RING_BLOCK_TIMEOUT_S + 0.1)
        self._running: list[_Running] = []
        self._stats: list[CaptureStats] | None = None
        self.warnings: list[str] = []   # incomplete capture points (also visible in the stats)

    def pcap_path(self, iface: str) -> Path:
        return self.out_dir / f"{iface}.pcap"

    def start(self, timeout: float = 5.0) -> None:
        """Start every tcpdump; return once each has said "listening on" (raise otherwise)."""
        if self._running:
            raise TraceError("Capture already started")
        tools = require_tools("nsenter", "tcpdump")
        if not os.path.exists(self.netns_path):
            raise TraceError(f"network namespace {self.netns_path} does not exist")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._stats = None
        try:
            for iface in self.ifaces:
                argv = [tools["nsenter"], f"--net={self.netns_path}",
                        *tcpdump_argv(tools["tcpdump"], iface, self.pcap_path(iface),
                                      self.buffer_kib, self.snaplen, self.bpf_filter,
                                      self.immediate, self.plain)]
                # Ctrl-C/SIGTERM wait until the new tcpdump is registered: a signal between
                # Popen and append would leave it running with nobody to stop it
                blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
                try:
                    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                            preexec_fn=unblock_interrupts)
                    run = _Running(iface, argv, proc)
                    self._running.append(run)
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                run.reader = threading.Thread(target=run.read_stderr, daemon=True,
                                              name=f"tcpdump-{iface}")
                run.reader.start()
            deadline = time.monotonic() + timeout
            for run in self._running:
                run.listening.wait(max(0.0, deadline - time.monotonic()))
                if not run.saw_listening:
                    if run.listening.is_set():      # stderr closed: it is exiting
                        try:
                            run.proc.wait(2.0)
                        except subprocess.TimeoutExpired:
                            pass
                    why = run.stderr or f"no 'listening on' within {timeout:.1f} s"
                    raise CommandError(run.argv, run.proc.returncode, why)
        except BaseException:
            self._terminate_all()
            raise

    def stop(self, timeout: float = 5.0, drain_s: float | None = None) -> list[CaptureStats]:
        """Let the ring drain, SIGINT every tcpdump, wait; return what each kept and lost.

        ``drain_s`` (default: the constructor's) is slept before SIGINT; see
        RING_BLOCK_TIMEOUT_S for why it must exceed 1 s unless immediate mode is on.
        """
        drain = self.drain_s if drain_s is None else drain_s
        if self._stats is not None and not self._running:
            return list(self._stats)
        stats: list[CaptureStats] = []
        problems: list[str] = []
        if drain > 0 and any(r.proc.poll() is None for r in self._running):
            time.sleep(drain)
        for run in self._running:
            if run.proc.poll() is None:
                run.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for run in self._running:
            try:
                run.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait()
                problems.append(f"{run.iface}: tcpdump did not stop on SIGINT, killed")
            if run.reader is not None:
                run.reader.join(2.0)
            if run.proc.stderr is not None:
                run.proc.stderr.close()
            parsed = parse_tcpdump_stats(run.iface, run.stderr)
            if parsed is not None and not parsed.complete:
                problems_note = (f"{run.iface}: kept {parsed.kept} of {parsed.received} "
                                 f"(kernel drops {parsed.kernel_drops}, "
                                 f"not written {parsed.not_written})")
                self.warnings.append(problems_note)
            if parsed is None:
                problems.append(f"{run.iface}: no statistics from tcpdump "
                                f"(exit {run.proc.returncode}): {run.stderr.strip()[-300:]}")
                parsed = CaptureStats(run.iface, kept=0, received=0, kernel_drops=0)
            stats.append(parsed)
        self._running = []
        self._stats = stats
        if problems:
            raise TraceError("capture stopped badly: " + "; ".join(problems))
        return list(stats)

    @property
    def running(self) -> bool:
        return bool(self._running)

    @property
    def stats(self) -> list[CaptureStats] | None:
        return None if self._stats is None else list(self._stats)

    def _terminate_all(self) -> None:
        for run in self._running:
            if run.proc.poll() is None:
                run.proc.kill()
            run.proc.wait()
            if run.reader is not None:
                run.reader.join(1.0)
            if run.proc.stderr is not None:
                run.proc.stderr.close()
        self._running = []

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._running:
            return
        if exc_type is not None:
            try:
                self.stop()
            except (TraceError, OSError):
                self._terminate_all()
            return
        self.stop()


def stop_captures(captures: Sequence[Capture], timeout: float = 5.0) -> list[CaptureStats]:
    """Stop several captures after one shared drain wait (the longest any of them needs)."""
    live = [c for c in captures if c.running]
    drain = max((c.drain_s for c in live), default=0.0)
    if drain > 0:
        time.sleep(drain)
    stats: list[CaptureStats] = []
    errors: list[str] = []
    for cap in captures:
        try:
            stats.extend(cap.stop(timeout, drain_s=0.0))
        except TraceError as exc:
            errors.append(str(exc))
            stats.extend(cap.stats or [])
    if errors:
        raise TraceError("; ".join(errors))
    return stats

"""Conntrack events of one network namespace: a pure line parser and an effectful watcher.

The watcher runs ``nsenter --net=<netns> conntrack -E -o timestamp,id --buffer-size N`` and
reads its stdout line by line in a thread.  When the kernel's netlink queue overflows,
conntrack prints ``WARNING: We have hit ENOBUFS! We are losing events.`` on stderr and goes on;
each such warning is counted as an overflow (events were lost) and reported by :meth:`stop`.

Clock: ``-o timestamp`` prints ``[seconds.microseconds]`` taken by conntrack with
gettimeofday() when it *received* the event, i.e. CLOCK_REALTIME, the same clock as the pcap
timestamps (the kernel stamps captured skbs with ktime_get_real()).  The event time therefore
lags the packet that caused it by the delivery delay (tens of microseconds when idle; more
under load or after an overflow), never leads it.
"""
from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Self

from netsim.errors import CommandError, TraceError
from netsim.trace.capture import require_tools, unblock_interrupts
from netsim.trace.records import ConntrackEvent, FiveTuple

__all__ = [
    "ENOBUFS_MARKER",
    "SUBSCRIBED_MARKER",
    "ConntrackWatcher",
    "dump_table",
    "enable_events",
    "parse_event_line",
    "parse_lines",
]

ENOBUFS_MARKER = "ENOBUFS"
SUBSCRIBED_MARKER = "buffer size has been set"
_KINDS = {"[NEW]": "NEW", "[UPDATE]": "UPDATE", "[DESTROY]": "DESTROY"}
_TS = re.compile(r"^\s*\[(\d+)\.(\d+)\]\s*")
_BRACKETED_TIME = re.compile(r"\[(?:start|stop)=[^\]]*\]")
_PROTO_NAMES = frozenset({"tcp", "udp", "icmp", "udplite", "sctp", "dccp", "gre", "icmpv6",
                          "unknown"})
_PORT_PROTOS = frozenset({"tcp", "udp", "udplite", "sctp", "dccp"})
_TUPLE_KEYS = frozenset({"src", "dst", "sport", "dport", "type", "code", "id"})


def parse_event_line(line: str, ts: float | None = None) -> ConntrackEvent | None:
    """Parse one line of ``conntrack -E -o timestamp,id`` or ``conntrack -L [-o extended,id]``.

    Event lines give kind NEW/UPDATE/DESTROY; table lines (no ``[KIND]``) give kind "DUMP".
    ``ts`` is used when the line carries no ``[sec.usec]`` stamp (0.0 if neither).
    Returns None for lines that are not entries (banners, warnings, blank lines).
    """
    text = line.strip()
    if not text:
        return None
    event_ts = ts if ts is not None else 0.0
    m = _TS.match(text)
    if m:
        event_ts = float(f"{m.group(1)}.{m.group(2)}")
        text = text[m.end():]
    text = _BRACKETED_TIME.sub("", text)
    tokens = text.split()
    if not tokens:
        return None
    kind = "DUMP"
    if tokens[0] in _KINDS:
        kind = _KINDS[tokens.pop(0)]
    if len(tokens) >= 2 and tokens[0] in ("ipv4", "ipv6") and tokens[1].isdigit():
        tokens = tokens[2:]
    if len(tokens) < 2 or tokens[0] not in _PROTO_NAMES or not tokens[1].isdigit():
        return None
    proto = tokens[0] if tokens[0] != "unknown" else tokens[1]
    pos = 2
    timeout: int | None = None
    if pos < len(tokens) and tokens[pos].isdigit():
        timeout = int(tokens[pos])
        pos += 1
    state = ""
    if pos < len(tokens) and "=" not in tokens[pos] and not tokens[pos].startswith("["):
        state = tokens[pos]
        pos += 1
    tuples: list[dict[str, str]] = []
    status: list[str] = []
    ct_id: int | None = None
    is_icmp = proto in ("icmp", "icmpv6")
    last_key = "id" if is_icmp else ("dport" if proto in _PORT_PROTOS else "dst")

    def complete(t: dict[str, str]) -> bool:
        return last_key in t

    for tok in tokens[pos:]:
        if tok.startswith("[") and tok.endswith("]"):
            flag = tok[1:-1]
            if flag and flag not in status:
                status.append(flag)
            continue
        key, sep, value = tok.partition("=")
        if not sep:
            continue
        if key == "src" and len(tuples) < 2 and (not tuples or complete(tuples[-1])):
            tuples.append({"src": value})
        elif tuples and not complete(tuples[-1]) and key in _TUPLE_KEYS:
            tuples[-1].setdefault(key, value)
        elif key == "id" and len(tuples) == 2 and value.isdigit():
            ct_id = int(value)
    if len(tuples) != 2 or any("dst" not in t for t in tuples):
        return None
    try:
        original, reply = (_five_tuple(proto, t, is_icmp) for t in tuples)
    except ValueError:
        return None
    return ConntrackEvent(ts=event_ts, kind=kind, original=original, reply=reply, state=state,
                          timeout=timeout, status=tuple(status), ct_id=ct_id)


def _five_tuple(proto: str, t: dict[str, str], is_icmp: bool) -> FiveTuple:
    if is_icmp:
        ident = int(t.get("id", "0"))
        return FiveTuple(proto, t["src"], ident, t["dst"], ident)
    return FiveTuple(proto, t["src"], int(t.get("sport", "0")), t["dst"], int(t.get("dport", "0")))


def parse_lines(lines: Sequence[str], ts: float | None = None) -> list[ConntrackEvent]:
    """Every entry among ``lines`` (others ignored)."""
    out = []
    for line in lines:
        ev = parse_event_line(line, ts)
        if ev is not None:
            out.append(ev)
    return out


def enable_events(netns_path: str, timestamps: bool = True) -> None:
    """Turn ctnetlink event delivery (and conntrack's own start/stop stamps) on in the netns."""
    tools = require_tools("nsenter", "sysctl")
    settings = ["net.netfilter.nf_conntrack_events=1"]
    if timestamps:
        settings.append("net.netfilter.nf_conntrack_timestamp=1")
    argv = [tools["nsenter"], f"--net={netns_path}", tools["sysctl"], "-q", "-w", *settings]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode,
                           proc.stderr + "\n(is the nf_conntrack module loaded? modprobe nf_conntrack)")


def dump_table(netns_path: str, timeout: float = 10.0) -> list[ConntrackEvent]:
    """The namespace's whole conntrack table now (``conntrack -L -o extended,id``), kind DUMP."""
    tools = require_tools("nsenter", "conntrack")
    argv = [tools["nsenter"], f"--net={netns_path}", tools["conntrack"], "-L", "-o", "extended,id"]
    now = time.time()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, None, f"timed out after {timeout} s") from exc
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr)
    return parse_lines(proc.stdout.splitlines(), ts=now)


@dataclass
class _Reader:
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class ConntrackWatcher:
    """Collect the conntrack events of one network namespace while it runs."""

    def __init__(self, netns_path: str, buffer_bytes: int = 8 << 20,
                 enable: bool = True) -> None:
        self.netns_path = netns_path
        self.buffer_bytes = buffer_bytes
        self.enable = enable
        self._proc: subprocess.Popen[bytes] | None = None
        self._argv: list[str] = []
        self._threads: list[threading.Thread] = []
        self._out = _Reader()

    def start(self, timeout: float = 5.0) -> None:
        """Start ``conntrack -E``; returns once it is subscribed (or raise with its stderr).

        conntrack joins the event groups when it opens its netlink socket and only then sets
        the buffer size, printing ``NOTICE: Netlink socket buffer size has been set to N``:
        that line on stderr is the sign it is listening.
        """
        if self._proc is not None:
            raise TraceError("ConntrackWatcher already started")
        tools = require_tools("nsenter", "conntrack")
        if self.enable:
            enable_events(self.netns_path)
        self._out = _Reader()
        self._argv = [tools["nsenter"], f"--net={self.netns_path}", tools["conntrack"], "-E",
                      "-o", "timestamp,id", "--buffer-size", str(self.buffer_bytes)]
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:  # a signal must not land between Popen and self._proc (nobody would stop it)
            self._proc = subprocess.Popen(self._argv, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          preexec_fn=unblock_interrupts)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self._threads = [
            threading.Thread(target=_pump, args=(self._proc.stdout, self._out.lines),
                             daemon=True, name="conntrack-stdout"),
            threading.Thread(target=_pump, args=(self._proc.stderr, self._out.errors),
                             daemon=True, name="conntrack-stderr"),
        ]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None or any(
                    SUBSCRIBED_MARKER in line for line in self._out.errors):
                break
            time.sleep(0.005)
        if self._proc.poll() is not None or not any(
                SUBSCRIBED_MARKER in line for line in self._out.errors):
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            for t in self._threads:
                t.join(1.0)
            rc = self._proc.returncode
            self._proc = None
            raise CommandError(self._argv, rc, "\n".join(self._out.errors))

    def stop(self, timeout: float = 5.0) -> tuple[list[ConntrackEvent], int]:
        """Stop watching; return the events in arrival order and how many overflows were hit."""
        proc = self._proc
        if proc is None:
            raise TraceError("ConntrackWatcher was not started")
        if proc.poll() is None:
            proc.send_signal(2)     # SIGINT: conntrack flushes stdout and prints its summary
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for t in self._threads:
            t.join(2.0)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        self._proc = None
        overflows = sum(1 for line in self._out.errors if ENOBUFS_MARKER in line)
        return parse_lines(self._out.lines), overflows

    @property
    def stderr(self) -> str:
        return "\n".join(self._out.errors)

    @property
    def raw_lines(self) -> list[str]:
        """conntrack's stdout lines as received (for fixtures and debugging)."""
        return list(self._out.lines)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self.stop()


def _pump(stream: object, sink: list[str]) -> None:
    if stream is None:
        return
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        sink.append(raw.decode("utf-8", "replace").rstrip("\n"))

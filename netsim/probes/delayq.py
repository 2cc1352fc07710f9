"""delayq: delay (and jitter) for IP packets through netfilter's queue, for kernels without the
netem qdisc (sch_netem).  Standard library only; runs inside the namespace whose packets it
delays, started by the lab (recorded in its ledger) and ended by its pid.

    python -m netsim.probes.delayq --queue 100 --delay-ms 50 [--jitter-ms 10]

The lab sends the link's packets here with `-j NFQUEUE --queue-num 100 --queue-bypass` (egress
in mangle POSTROUTING, ingress in mangle PREROUTING).  Each packet is held for delay ± jitter
(uniform, never below 0 — netem's default without a distribution table; with jitter, packets
can overtake each other, as with netem) and then accepted.  Only metadata is copied to user
space, and the queue fails open when full, so nothing is dropped here.  Prints one JSON line
`{"ready": ...}` once bound, one `{"stats": ...}` line when it ends (SIGTERM).

nfnetlink_queue, as the kernel defines it (include/uapi/linux/netfilter/nfnetlink_queue.h):
messages are nlmsghdr + nfgenmsg(family, version, queue number big-endian) + attributes.
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NF_ACCEPT = 1
SO_RCVBUFFORCE = 33
_NLMSG = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")   # family, version, res_id (big-endian: packed by hand)


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def _message(msg: int, queue: int, attrs: bytes, flags: int = NLM_F_REQUEST, seq: int = 0) -> bytes:
    body = _NFGEN.pack(socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return _NLMSG.pack(_NLMSG.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, flags, seq, 0) + body


def config_messages(queue: int, maxlen: int = 65536) -> list[bytes]:
    """Bind the queue, copy metadata only, hold at most `maxlen` packets, fail open when full."""
    return [
        _message(NFQNL_MSG_CONFIG, queue, _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)),
                 NLM_F_REQUEST | NLM_F_ACK, 1),
        _message(NFQNL_MSG_CONFIG, queue,
                 _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
                 + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen))
                 + _attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN))
                 + _attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)),
                 NLM_F_REQUEST | NLM_F_ACK, 2),
    ]


def verdict(queue: int, packet_id: int) -> bytes:
    return _message(NFQNL_MSG_VERDICT, queue, _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id)))


def parse(data: bytes) -> tuple[list[int], list[str]]:
    """Packet ids of the queued packets in a datagram of netlink messages, and any errors."""
    ids: list[int] = []
    errors: list[str] = []
    off = 0
    while off + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size:
            break
        if kind == NLMSG_ERROR:
            code = struct.unpack_from("=i", data, off + _NLMSG.size)[0]
            if code:
                errors.append(os.strerror(-code))
        elif kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            a = off + _NLMSG.size + _NFGEN.size
            end = off + length
            while a + 4 <= end:
                alen, akind = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                if akind & 0x3FFF == NFQA_PACKET_HDR:
                    ids.append(struct.unpack_from("!I", data, a + 4)[0])
                a += alen + (-alen % 4)
        off += length + (-length % 4)
    return ids, errors


def run(queue: int, delay_s: float, jitter_s: float) -> int:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((0, 0))
    for msg in config_messages(queue):
        sock.send(msg)
        _ids, errors = parse(sock.recv(65536))
        if errors:
            print(json.dumps({"error": f"queue {queue}: {errors[0]}"}), flush=True)
            return 1
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)   # a signal ends the select at once (PEP 475 would retry it)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    sock.setblocking(False)
    print(json.dumps({"ready": {"queue": queue, "delay_ms": delay_s * 1e3, "jitter_ms": jitter_s * 1e3}}),
          flush=True)
    held: list[tuple[float, int, int]] = []   # (due, arrival order, packet id)
    rng = random.Random()
    seen = 0
    while not stop or held:
        now = time.monotonic()
        while held and held[0][0] <= now:
            sock.send(verdict(queue, heapq.heappop(held)[2]))
        if stop:     # release what is held at once: nothing may stay queued after we go
            for _due, _n, pid in sorted(held):
                sock.send(verdict(queue, pid))
            held.clear()
            break
        timeout = max(0.0, held[0][0] - now) if held else None
        try:
            ready, _, _ = select.select([sock.fileno(), wake_r], [], [], timeout)
        except InterruptedError:
            continue
        if wake_r in ready:
            os.read(wake_r, 64)
        if sock.fileno() not in ready:
            continue
        while True:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as e:   # ENOBUFS: messages lost; the queue fails open, go on
                print(json.dumps({"warning": str(e)}), flush=True)
                break
            ids, _errors = parse(data)
            now = time.monotonic()
            for pid in ids:
                hold = delay_s + (rng.uniform(-jitter_s, jitter_s) if jitter_s else 0.0)
                heapq.heappush(held, (now + max(0.0, hold), seen, pid))
                seen += 1
    print(json.dumps({"stats": {"packets": seen}}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="delayq", description=__doc__.split("\n\n")[0])
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, required=True)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    a = ap.parse_args(argv)
    return run(a.queue, a.delay_ms / 1e3, a.jitter_ms / 1e3)


if __name__ == "__main__":
    sys.exit(main())

"""netprobe: servers and clients for lab traffic.  Standard library only, so it runs in any
namespace with a Python 3 (external hosts; containers with the host image).

Servers print one JSON line `{"ready": ...}` once listening, then one JSON line per peer:
    python -m netsim.probes.netprobe serve http 80
    python -m netsim.probes.netprobe serve udp_echo 5000
    python -m netsim.probes.netprobe serve tcp_echo 7
Clients print one JSON result line and exit 0 when they got a reply, 1 otherwise:
    python -m netsim.probes.netprobe http_get 203.0.113.2 8080 --sport 41000
    python -m netsim.probes.netprobe tcp_connect IP PORT [--sport N]
    python -m netsim.probes.netprobe udp IP PORT [--sport N] [--count N] [--payload TEXT]
The HTTP and echo servers tell each client the address they saw it come from.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time


def _emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _tcp_listener(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(128)
    return s


def _serve_http_conn(conn: socket.socket, peer: tuple[str, int]) -> None:
    with conn:
        conn.settimeout(5)
        data = b""
        try:
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        body = f"you are {peer[0]}:{peer[1]}\n".encode()
        head = (f"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        try:
            conn.sendall(head + body)
        except OSError:
            pass
    _emit({"event": "http", "peer": f"{peer[0]}:{peer[1]}", "ts": time.time(),
           "request": data.split(b"\r\n", 1)[0].decode(errors="replace")})


def _serve_tcp_echo_conn(conn: socket.socket, peer: tuple[str, int]) -> None:
    with conn:
        conn.settimeout(5)
        try:
            conn.sendall(f"you are {peer[0]}:{peer[1]}\n".encode())
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                conn.sendall(chunk)
        except OSError:
            pass
    _emit({"event": "tcp", "peer": f"{peer[0]}:{peer[1]}", "ts": time.time()})


def serve(kind: str, port: int) -> int:
    if kind == "udp_echo":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", port))
        _emit({"ready": f"udp_echo:{port}"})
        while True:
            data, peer = s.recvfrom(65535)
            s.sendto(f"you are {peer[0]}:{peer[1]}\n".encode() + data, peer)
            _emit({"event": "udp", "peer": f"{peer[0]}:{peer[1]}", "ts": time.time(), "bytes": len(data)})
    handler = {"http": _serve_http_conn, "tcp_echo": _serve_tcp_echo_conn}[kind]
    lst = _tcp_listener(port)
    _emit({"ready": f"{kind}:{port}"})
    while True:
        conn, peer = lst.accept()
        threading.Thread(target=handler, args=(conn, peer), daemon=True).start()


def _tcp_client(ip: str, port: int, sport: int | None, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sport:
        s.bind(("0.0.0.0", sport))
    s.settimeout(timeout)
    s.connect((ip, port))
    return s


def http_get(ip: str, port: int, sport: int | None, timeout: float) -> int:
    t0 = time.time()
    try:
        s = _tcp_client(ip, port, sport, timeout)
        local = s.getsockname()
        s.sendall(f"GET / HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
    except OSError as e:
        _emit({"ok": False, "error": str(e), "duration_s": time.time() - t0})
        return 1
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    _emit({"ok": status.startswith("HTTP/"), "status": status, "local": f"{local[0]}:{local[1]}",
           "body": body.decode(errors="replace")[:512], "duration_s": time.time() - t0})
    return 0 if status.startswith("HTTP/") else 1


def tcp_connect(ip: str, port: int, sport: int | None, timeout: float) -> int:
    t0 = time.time()
    try:
        s = _tcp_client(ip, port, sport, timeout)
        local = s.getsockname()
        s.close()
    except OSError as e:
        _emit({"ok": False, "error": str(e), "duration_s": time.time() - t0})
        return 1
    _emit({"ok": True, "local": f"{local[0]}:{local[1]}", "duration_s": time.time() - t0})
    return 0


def udp(ip: str, port: int, sport: int | None, count: int, payload: str, timeout: float) -> int:
    t0 = time.time()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", sport or 0))
    s.settimeout(timeout)
    replies: list[str] = []
    for i in range(count):
        s.sendto(f"{payload} {i}".encode(), (ip, port))
        try:
            data, _ = s.recvfrom(65535)
            replies.append(data.decode(errors="replace").split("\n", 1)[0])
        except OSError:
            pass
    local = s.getsockname()
    _emit({"ok": bool(replies), "sent": count, "received": len(replies), "replies": replies[:5],
           "local": f"{local[0]}:{local[1]}", "duration_s": time.time() - t0})
    return 0 if replies else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="netprobe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sv = sub.add_parser("serve")
    sv.add_argument("kind", choices=["http", "tcp_echo", "udp_echo"])
    sv.add_argument("port", type=int)
    for name in ("http_get", "tcp_connect", "udp"):
        c = sub.add_parser(name)
        c.add_argument("ip")
        c.add_argument("port", type=int)
        c.add_argument("--sport", type=int)
        c.add_argument("--timeout", type=float, default=5.0)
        if name == "udp":
            c.add_argument("--count", type=int, default=1)
            c.add_argument("--payload", default="netsim")
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        return serve(a.kind, a.port)
    if a.cmd == "http_get":
        return http_get(a.ip, a.port, a.sport, a.timeout)
    if a.cmd == "tcp_connect":
        return tcp_connect(a.ip, a.port, a.sport, a.timeout)
    return udp(a.ip, a.port, a.sport, a.count, a.payload, a.timeout)


if __name__ == "__main__":
    sys.exit(main())

"""Measuring a link: a small server on one side, and the client's RTT, throughput and loss.

    python -m migrator.netns.probe --listen 10.213.0.1:5201   # the server (TCP and UDP)

TCP: the client's first byte picks the mode: b"E" echoes fixed 64-byte messages back (RTT by
ping-pong), b"S" streams zeros until the client closes (throughput, server -> client). UDP:
every datagram is echoed (loss). The client functions take a `connect()` that returns a
connected TCP socket, so they measure whatever path it opens (direct, or through a relay).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable

from ..quantiles import summarize

MESSAGE = 64
_STREAM_CHUNK = 1 << 20


# -- server ----------------------------------------------------------------------------------


def _serve_tcp(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            mode = conn.recv(1)
            if mode == b"E":
                while msg := _recv_exactly(conn, MESSAGE):
                    conn.sendall(msg)
            elif mode == b"S":
                zeros = bytes(_STREAM_CHUNK)
                while True:
                    conn.sendall(zeros)
        except OSError:
            pass


def _serve_udp(sock: socket.socket) -> None:
    while True:
        try:
            data, peer = sock.recvfrom(2048)
            sock.sendto(data, peer)
        except OSError:
            return


def serve(host: str, port: int) -> None:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((host, port))
    tcp.listen(64)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, port))
    threading.Thread(target=_serve_udp, args=(udp,), daemon=True).start()
    print(json.dumps({"ready": True, "listening": [host, port]}), flush=True)
    while True:
        conn, _ = tcp.accept()
        threading.Thread(target=_serve_tcp, args=(conn,), daemon=True).start()


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = s.recv(n - len(buf))
        if not part:
            return b""
        buf += part
    return bytes(buf)


# -- client ----------------------------------------------------------------------------------


def rtt(connect: Callable[[], socket.socket], count: int = 200, budget: float = 1.5,
        at_least: int = 10) -> dict:
    """Round trips of 64-byte messages on one TCP connection: count of them, or fewer when
    budget seconds run out (but at least at_least). Summary in seconds, plus the connect time."""
    began = time.perf_counter()
    s = connect()
    connected = time.perf_counter() - began
    samples = []
    with s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"E")
        msg = bytes(MESSAGE)
        deadline = time.monotonic() + budget
        while len(samples) < count and (len(samples) < at_least or time.monotonic() < deadline):
            t0 = time.perf_counter()
            s.sendall(msg)
            if len(_recv_exactly(s, MESSAGE)) != MESSAGE:
                raise ConnectionError("the probe server closed the connection mid-measurement")
            samples.append(time.perf_counter() - t0)
    out = summarize(samples)
    out["min"] = min(samples)
    out["connect_seconds"] = connected
    del out["total"]
    return out


def throughput(connect: Callable[[], socket.socket], seconds: float = 1.5,
               warmup: float = 0.3) -> dict:
    """Bulk TCP from the server to this side for warmup + seconds; counts only after warmup."""
    s = connect()
    buf = bytearray(_STREAM_CHUNK)
    with s:
        s.sendall(b"S")
        start = time.monotonic()
        counted_from = start + warmup
        end = counted_from + seconds
        counted = 0
        while (now := time.monotonic()) < end:
            s.settimeout(max(0.05, end - now))
            try:
                n = s.recv_into(buf)
            except TimeoutError:
                continue  # a lossy link can be silent for a retransmission timeout or longer
            if not n:
                raise ConnectionError("the probe server closed the stream")
            if now >= counted_from:
                counted += n
        elapsed = time.monotonic() - counted_from
    return {"bits_per_second": counted * 8 / elapsed, "bytes": counted, "seconds": elapsed,
            "warmup_seconds": warmup}


def udp_loss(sock: socket.socket, address: tuple[str, int], count: int = 1000,
             packets_per_second: float = 10000, wait: float = 0.5) -> dict:
    """Echo count numbered datagrams off the server; a lost echo is a loss either way."""
    echoed: set[int] = set()
    sock.settimeout(0.05)
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            try:
                data = sock.recv(64)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            echoed.add(struct.unpack("!I", data[:4])[0])

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    interval = 1.0 / packets_per_second
    t0 = time.monotonic()
    for i in range(count):
        sock.sendto(struct.pack("!I", i) + bytes(60), address)
        ahead = t0 + (i + 1) * interval - time.monotonic()
        if ahead > 0.001:
            time.sleep(ahead)
    time.sleep(wait)
    done.set()
    receiver.join()
    sock.close()
    round_trip = 1 - len(echoed) / count
    return {"sent": count, "echoed": len(echoed), "round_trip_loss": round_trip,
            # a datagram survives twice (out and back): one way = 1 - sqrt(survival)
            "one_way_loss_estimate": 1 - (1 - round_trip) ** 0.5}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m migrator.netns.probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default="127.0.0.1:5201", metavar="HOST:PORT")
    p.add_argument("--until-stdin-closes", action="store_true",
                   help="exit when stdin reaches its end (the parent that started us is gone)")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.until_stdin_closes:
        threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    try:
        serve(host, int(port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

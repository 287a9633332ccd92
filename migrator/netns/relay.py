"""A TCP relay: forwards each connection, optionally holding every chunk for a fixed delay.

Where the kernel has no `sch_netem`, the link's round-trip time comes from here: a relay in the
source's namespace, in front of the source, holds each chunk it reads until the chunk's arrival
time + delay, in each direction, so a request/response pays 2 x delay more, while a bulk
transfer keeps its throughput (chunks are held, not serialized behind each other's delay).
Without delay it is a plain bridge, e.g. from this host's loopback into a namespace.

    python -m migrator.netns.relay --delay 0.001 --forward 10.213.0.1:8470=127.0.0.1:8470

prints one JSON line when listening, then takes `delay SECONDS` lines on stdin (answered by
`ok`), and exits when stdin closes (its parent is gone), or on SIGTERM/SIGINT.

Split-TCP caveat: each side's TCP sees only its short leg, so congestion control and loss
recovery run at the leg's RTT, not the delayed one (slow start ramps faster than on a real
long link). Latency of small messages is what this emulates faithfully.
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

CHUNK = 256 << 10
DEFAULT_CAP = 16 << 20  # bytes held per direction of a connection before reading pauses


# A sleep on this kind of VM overshoots by up to ~150 us (timer slack, the wake-up): a delay of
# tens of us would become ~150. So sleep only until this long before the due time, then spin.
SLEEP_OVERSHOOT = 150e-6


def _hold_until(due: float) -> None:
    wait = due - time.monotonic()
    if wait > SLEEP_OVERSHOOT:
        time.sleep(wait - SLEEP_OVERSHOOT)
    while time.monotonic() < due:
        pass


class Relay:
    """Accept on listener; for each connection, connect() the other side and forward.

    delayed=True queues every chunk with a due time (delay may change while running);
    delayed=False copies straight through (a bridge).
    """

    def __init__(self, listener: socket.socket, connect: Callable[[], socket.socket],
                 delayed: bool = False, delay: float = 0.0, cap: int = DEFAULT_CAP) -> None:
        self.listener = listener
        self.connect = connect
        self.delayed = delayed
        self.delay = delay
        self.cap = cap
        self.connections = 0
        self._open: set[_Connection] = set()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.getsockname()[:2]

    def start(self) -> Relay:
        threading.Thread(target=self._accept, name=f"relay-{self.address[1]}", daemon=True).start()
        return self

    def close(self) -> None:
        self._closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self._lock:
            conns = list(self._open)
        for c in conns:
            c.abort()

    def _accept(self) -> None:
        while not self._closed:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = self.connect()
            except OSError:
                down.close()
                continue
            for s in (down, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, down, up)
            with self._lock:
                self._open.add(conn)
                self.connections += 1
            conn.start()

    def _finished(self, conn: _Connection) -> None:
        with self._lock:
            self._open.discard(conn)


class _Connection:
    def __init__(self, relay: Relay, down: socket.socket, up: socket.socket) -> None:
        self.relay = relay
        self.socks = (down, up)
        self.directions = (_Direction(self, down, up), _Direction(self, up, down))
        self._left = len(self.directions)
        self._lock = threading.Lock()

    def start(self) -> None:
        for d in self.directions:
            d.start()

    def abort(self) -> None:
        """Break both sockets: blocked reads and writes return, every thread winds down."""
        for d in self.directions:
            d.abort()
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def direction_done(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            for s in self.socks:
                s.close()
            self.relay._finished(self)


class _Direction:
    """One way of a connection: src -> dst."""

    def __init__(self, conn: _Connection, src: socket.socket, dst: socket.socket) -> None:
        self.conn = conn
        self.src, self.dst = src, dst
        self.queue: collections.deque = collections.deque()
        self.queued = 0
        self.broken = False
        self.cond = threading.Condition()

    def start(self) -> None:
        if self.conn.relay.delayed:
            threading.Thread(target=self._read, daemon=True).start()
            threading.Thread(target=self._write, daemon=True).start()
        else:
            threading.Thread(target=self._copy, daemon=True).start()

    def abort(self) -> None:
        with self.cond:
            self.broken = True
            self.queue.append((0.0, None))
            self.cond.notify_all()

    def _copy(self) -> None:
        try:
            while data := self.src.recv(CHUNK):
                self.dst.sendall(data)
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            self.conn.abort()
        finally:
            self.conn.direction_done()

    def _read(self) -> None:
        relay = self.conn.relay
        try:
            while True:
                data = self.src.recv(CHUNK)
                due = time.monotonic() + relay.delay
                with self.cond:
                    while self.queued > relay.cap and not self.broken:
                        self.cond.wait()
                    if self.broken:
                        return
                    self.queue.append((due, data))
                    self.queued += len(data)
                    self.cond.notify_all()
                if not data:
                    return  # EOF queued: the writer half-closes dst once the rest has gone
        except OSError:
            self.conn.abort()

    def _write(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.queue:
                        self.cond.wait()
                    due, data = self.queue.popleft()
                if data is None:
                    return
                _hold_until(due)
                if not data:
                    self.dst.shutdown(socket.SHUT_WR)
                    return
                self.dst.sendall(data)
                with self.cond:
                    self.queued -= len(data)
                    self.cond.notify_all()
        except OSError:
            self.conn.abort()
        finally:
            self.conn.direction_done()


def listen(host: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(128)
    return s


def dial(host: str, port: int, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection((host, port), timeout=timeout)
    s.settimeout(None)  # the timeout was for connecting; an idle connection may stay idle
    return s


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: write HOST:PORT")
    return host, int(port)


def _forward(text: str) -> tuple[tuple[str, int], tuple[str, int]]:
    listen_at, sep, target = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(
            f"--forward {text!r}: write LISTEN_HOST:PORT=TARGET_HOST:PORT")
    return _address(listen_at), _address(target)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m migrator.netns.relay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--forward", type=_forward, action="append", required=True,
                   metavar="LISTEN_HOST:PORT=TARGET_HOST:PORT")
    p.add_argument("--delay", type=float, default=0.0, help="seconds added in each direction")
    p.add_argument("--cap", type=int, default=DEFAULT_CAP,
                   help="bytes held per direction of a connection before reading pauses")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    relays = []
    for (lhost, lport), (thost, tport) in args.forward:
        relays.append(Relay(listen(lhost, lport),
                            lambda h=thost, p=tport: dial(h, p),
                            delayed=True, delay=args.delay, cap=args.cap).start())
    print(json.dumps({"ready": True, "listening": [list(r.address) for r in relays],
                      "delay_seconds": args.delay}), flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if len(words) == 2 and words[0] == "delay":
                for r in relays:
                    r.delay = float(words[1])
                print("ok", flush=True)
            elif words == ["stats"]:
                print(json.dumps({"connections": sum(r.connections for r in relays)}), flush=True)
    except KeyboardInterrupt:
        pass
    for r in relays:
        r.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

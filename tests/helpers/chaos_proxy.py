"""A TCP proxy on loopback that breaks what passes through it, on purpose.

Between the destination and the source it can cut each connection after a random number of
bytes (mid-reply, so replies arrive truncated), delay every chunk, refuse new connections,
and be re-pointed at a restarted source. It counts the failures it injected.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

_CHUNK = 64 << 10


class ChaosProxy:
    def __init__(self, upstream_port: int, seed: int = 0):
        self.upstream_port = upstream_port
        self.rng = random.Random(seed)
        self.cut_after: tuple[int, int] | None = None  # (min, max) bytes downstream per connection
        self.delay_s = 0.0
        self.refusing = False
        self.injected = 0
        self.turned_away = 0  # connections reset at once: refusing, or no upstream to reach
        self._lock = threading.Lock()
        self._conns: list[tuple[socket.socket, socket.socket]] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                _reset(client)
                self.turned_away += 1
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                _reset(client)
                self.turned_away += 1
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(None)
            budget = self.rng.randint(*self.cut_after) if self.cut_after else None
            pair = (client, upstream)
            with self._lock:
                self._conns.append(pair)
            threading.Thread(target=self._pump, args=(pair, client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, upstream, client, budget), daemon=True).start()

    def _pump(self, pair: tuple, src: socket.socket, dst: socket.socket, budget: int | None) -> None:
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                if self.delay_s:
                    time.sleep(self.delay_s)
                if budget is not None and len(data) >= budget:
                    dst.sendall(data[:budget])  # a truncated reply, then the link dies
                    with self._lock:
                        self.injected += 1
                    break
                if budget is not None:
                    budget -= len(data)
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            if pair in self._conns:
                self._conns.remove(pair)
        _reset(src)
        _reset(dst)

    def break_all(self) -> int:
        """Reset every open connection now; returns how many were cut."""
        with self._lock:
            conns, self._conns = self._conns, []
            self.injected += len(conns)
        for a, b in conns:
            _reset(a)
            _reset(b)
        return len(conns)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.break_all()


def _reset(s: socket.socket) -> None:
    """Cut the connection as a dead link or a killed peer would (RST where possible).

    shutdown() first: a close() alone does not wake another thread blocked in recv() on the
    same socket, and the kernel keeps the connection open until that recv returns.
    """
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()

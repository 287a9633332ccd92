"""Slowloris: clients that send a request head a byte a second, and page streams that send half
a request and stall, must not keep the daemons from serving others promptly, and the server
must close them in the end. A page stream that is merely silent (an urgent stream while no vCPU
faults) must stay open."""

from __future__ import annotations

import socket
import threading
import time


from migrator.protocol import PAGE_SIZE, frames
from migrator.protocol.frames import PageRequest
from migrator.source.daemon import KEEPALIVE_TIMEOUT
from migrator.source.streams import FRAME_STALL_S

from .conftest import AUTH
from .pagestream import assert_pages, read_frame_reply, upgraded
from .rawhttp import closed_by_peer, connect, exchange, request_bytes

PROMPT_S = 1.0  # a normal client's request must be answered within this, slow clients or not
SLOW_HEADS = 40
STALLED_STREAMS = 20
MARGIN_S = 5.0


class Trickler:
    """Sends each socket one more byte of a never-ending request head every second."""

    HEAD = b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4000

    def __init__(self, port: int, n: int):
        self.socks = [connect(port) for _ in range(n)]
        self.closed_at: dict[int, float] = {}
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(1.0 if i else 0):
            for k, s in enumerate(self.socks):
                if k in self.closed_at:
                    continue
                try:
                    if closed_by_peer(s):
                        raise ConnectionResetError
                    s.send(self.HEAD[i:i + 1])
                except OSError:
                    self.closed_at[k] = time.monotonic() - self.started
            i += 1

    def all_closed(self) -> bool:
        return len(self.closed_at) == len(self.socks)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for s in self.socks:
            s.close()


def _served_promptly(daemon, target: str) -> None:
    began = time.monotonic()
    reply = exchange(daemon.port, request_bytes("GET", target, AUTH), timeout=5)
    took = time.monotonic() - began
    assert reply is not None and reply.status == 200, reply
    assert took < PROMPT_S, f"{target} took {took:.2f} s among slow clients"


def _stream_round_trip(source, manifest, s: socket.socket, pending: bytes = b"") -> None:
    began = time.monotonic()
    s.sendall(PageRequest(5, 9 * PAGE_SIZE, PAGE_SIZE).encode())
    header, body = read_frame_reply(s, pending)
    assert header.status == frames.OK and time.monotonic() - began < PROMPT_S
    assert_pages(manifest, 9 * PAGE_SIZE, body)


def test_source_serves_others_and_closes_slow_heads_and_stalled_streams(source, manifest):
    idle, idle_pending = upgraded(source, "urgent", session="idle")  # silent, like a real one
    heads = Trickler(source.port, SLOW_HEADS)
    stalled = []
    try:
        for i in range(STALLED_STREAMS):
            s, _ = upgraded(source, ("urgent", "background")[i % 2], session=f"stall{i}")
            s.sendall(PageRequest(1, 0, PAGE_SIZE).encode()[:7])  # 7 of 16 bytes, then nothing
            stalled.append(s)
        began = time.monotonic()
        deadline = began + max(KEEPALIVE_TIMEOUT, FRAME_STALL_S) + MARGIN_S
        while not (heads.all_closed() and all(closed_by_peer(s) for s in stalled)):
            assert time.monotonic() < deadline, (
                f"after {time.monotonic() - began:.0f} s: {len(heads.closed_at)} of {SLOW_HEADS} "
                f"slow heads and {sum(map(closed_by_peer, stalled))} of {STALLED_STREAMS} "
                f"stalled streams closed")
            _served_promptly(source, f"/v1/pages?offset={PAGE_SIZE}&length={PAGE_SIZE}")
            s, pending = upgraded(source, "urgent", session="prompt")
            with s:
                _stream_round_trip(source, manifest, s, pending)
            time.sleep(0.5)
        assert min(heads.closed_at.values()) >= KEEPALIVE_TIMEOUT - 1, heads.closed_at
        # The silent stream outlived both timeouts and still answers.
        assert not closed_by_peer(idle)
        _stream_round_trip(source, manifest, idle, idle_pending)
    finally:
        heads.stop()
        idle.close()
        for s in stalled:
            s.close()
    assert "nothing for" in source.log()  # each stalled stream was logged as it was closed


def test_dest_serves_others_while_slow_heads_trickle(dest):
    heads = Trickler(dest.port, SLOW_HEADS)
    try:
        for _ in range(6):
            _served_promptly(dest, "/v1/status")
            _served_promptly(dest, "/healthz")
            time.sleep(0.5)
        assert dest.alive()
    finally:
        heads.stop()


def test_dest_closes_slow_heads(dest):
    heads = Trickler(dest.port, 4)
    try:
        deadline = time.monotonic() + KEEPALIVE_TIMEOUT + MARGIN_S
        while not heads.all_closed():
            assert time.monotonic() < deadline, "slow heads still open"
            time.sleep(0.25)
    finally:
        heads.stop()

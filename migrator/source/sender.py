"""The Python face of the source's C page sender (migrator/_cffi_src/source_sender.c).

A PageSender serves one upgraded stream in its own thread, with the GIL released: requests
in, replies out straight from the image mapping. What it served is carried into the stream
kind's and the session's Counters by fold(), whenever /v1/status or /metrics is asked and
when the stream ends.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from typing import Callable

from .. import metrics
from .._dataplane import ffi, lib
from ..protocol.frames import MAX_REQUEST_LENGTH
from .served import Counters

_FOLDED = ("requests", "bytes", "bad_request", "out_of_range")


class PageSender:
    def __init__(self, kind: str, fd: int, image: memoryview, initial: bytes,
                 counters: list[Counters], stall_s: float):
        self.kind, self.fd = kind, fd
        self._image = ffi.from_buffer("uint8_t[]", image)
        self._initial = ffi.new("uint8_t[]", initial or b"\0")
        s = self._s = ffi.new("struct src_stream *")
        s.fd, s.image, s.size, s.max_request = fd, self._image, len(image), MAX_REQUEST_LENGTH
        s.stall_ms = int(stall_s * 1000)
        s.initial, s.initial_len = self._initial, len(initial)
        metrics.set_bounds(s.latency)
        self._counters = counters
        self._folded = dict.fromkeys(_FOLDED, 0)
        self._lock = threading.Lock()
        self._latency = metrics.NativeHistogram(s.latency,
                                                metrics.SOURCE_REQUEST_LATENCY.labels(kind))

    def serve(self, done: Callable[[int], None]) -> None:
        """Serve in a new thread; done(rc) is called from it when the stream ends:
        0 the peer closed, -ETIMEDOUT half a request stalled, another -errno a failure."""
        def body() -> None:
            rc = lib.src_serve(self._s)
            self.fold()
            done(rc)

        threading.Thread(target=body, name=f"send-{self.kind}", daemon=True).start()

    def stop(self) -> None:
        """Make the sender return soon (it looks at the flag at least every 200 ms)."""
        self._s.stop = 1
        try:
            with socket.socket(fileno=os.dup(self.fd)) as s:
                s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def fold(self) -> None:
        """Carry what was served since the last fold into the counters and the histogram."""
        s = self._s
        with self._lock:
            now = {name: getattr(s, name) for name in _FOLDED}
            d = {name: now[name] - self._folded[name] for name in _FOLDED}
            self._folded = now
            self._latency.fold()
        for c in self._counters:
            c.requests += d["requests"]
            c.bytes += d["bytes"]
            c.bad_request += d["bad_request"]
            c.out_of_range += d["out_of_range"]


def stalled(rc: int) -> bool:
    return rc == -errno.ETIMEDOUT

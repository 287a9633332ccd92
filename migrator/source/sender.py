"""The Python face of the source's C page sender (migrator/_cffi_src/source_sender.c).

A PageSender serves one upgraded stream in its own thread, with the GIL released: requests
in, replies out straight from the image mapping. It owns the stream's descriptor: its thread
closes it when serving ends, so the number is never closed under a sender still using it (a
new connection may get that number at once, and would be read and written by the old sender).
What it served is carried into the stream kind's and the session's Counters by fold(), whenever
/v1/status or /metrics is asked and when the stream ends.
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
from .inject import KINDS, Corruption
from .served import Counters

_FOLDED = ("requests", "bytes", "bad_request", "out_of_range")


class PageSender:
    def __init__(self, kind: str, fd: int, image: memoryview, initial: bytes,
                 counters: list[Counters], stall_s: float,
                 corruption: Corruption | None = None, served_wrong: bytearray | None = None):
        self.kind, self.fd = kind, fd
        self._image = ffi.from_buffer("uint8_t[]", image)
        self._initial = ffi.new("uint8_t[]", initial or b"\0")
        s = self._s = ffi.new("struct src_stream *")
        s.fd, s.image, s.size, s.max_request = fd, self._image, len(image), MAX_REQUEST_LENGTH
        s.stall_ms = int(stall_s * 1000)
        s.initial, s.initial_len = self._initial, len(initial)
        metrics.set_bounds(s.latency)
        if corruption is not None:
            # kept alive as long as the C side points into them
            self._always = (ffi.from_buffer("uint8_t[]", corruption.always_wrong)
                            if corruption.always_wrong else ffi.NULL)
            self._served_wrong = ffi.from_buffer("uint8_t[]", served_wrong)
            s.corrupt_threshold, s.always_wrong = corruption.threshold, self._always
            s.served_wrong = self._served_wrong
            s.rng = int.from_bytes(os.urandom(8), "little") | 1
        self._counters = counters
        self._folded = dict.fromkeys(_FOLDED, 0)
        self._injected = [0] * len(KINDS)
        self._lock = threading.Lock()
        self._fd_lock = threading.Lock()  # fd is closed (-1) under it, and dup'ed under it
        self._thread: threading.Thread | None = None
        self._latency = metrics.NativeHistogram(s.latency,
                                                metrics.SOURCE_REQUEST_LATENCY.labels(kind))

    def serve(self, done: Callable[[int], None]) -> None:
        """Serve in a new thread; done(rc) is called from it when the stream ends:
        0 the peer closed, -ETIMEDOUT half a request stalled, another -errno a failure."""
        def body() -> None:
            try:
                rc = lib.src_serve(self._s)
            finally:
                self._close()
            self.fold()
            done(rc)

        thread = threading.Thread(target=body, name=f"send-{self.kind}", daemon=True)
        # under the lock, so that stop() sees either no thread (and closes fd itself) or a
        # started one (and leaves fd to it), never one starting
        with self._fd_lock:
            if self._thread is not None or self.fd < 0:
                raise RuntimeError(f"the {self.kind} sender has served or was stopped already")
            thread.start()
            self._thread = thread

    def _close(self) -> None:
        with self._fd_lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = self._s.fd = -1

    def stop(self) -> None:
        """Make the sender return soon (it looks at the flag at least every 200 ms); its
        thread closes the descriptor. One that never served is closed here."""
        self._s.stop = 1
        with self._fd_lock:
            if self._thread is None:
                self._close_locked()
                return
            if self.fd < 0:
                return
            try:
                with socket.socket(fileno=os.dup(self.fd)) as s:
                    s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the serving thread to end; True when it has (or never started)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def fold(self) -> None:
        """Carry what was served since the last fold into the counters and the histogram."""
        s = self._s
        with self._lock:
            now = {name: getattr(s, name) for name in _FOLDED}
            d = {name: now[name] - self._folded[name] for name in _FOLDED}
            self._folded = now
            injected = [s.injected[i] for i in range(len(KINDS))]
            wrong = [n - was for n, was in zip(injected, self._injected)]
            self._injected = injected
            self._latency.fold()
        for c in self._counters:
            c.requests += d["requests"]
            c.bytes += d["bytes"]
            c.bad_request += d["bad_request"]
            c.out_of_range += d["out_of_range"]
            c.injected = [a + b for a, b in zip(c.injected, wrong)]


def stalled(rc: int) -> bool:
    return rc == -errno.ETIMEDOUT


def cut_short(rc: int) -> bool:
    """The sender ended the stream after a short frame it was told to inject."""
    return rc == -errno.ECONNABORTED

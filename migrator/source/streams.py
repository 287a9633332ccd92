"""Upgraded page streams: after the 101, a connection speaks protocol/frames.py.

Each stream is its own TCP connection (urgent faults on one, the background pull on another),
so an urgent request never waits in a queue behind background bytes; within one event loop
the long background reply is written in slices that yield to the loop between them, so a
fault's round trip waits at most one slice.

Taking the connection over uses aiohttp's public API only: the handler swaps in a
PageStreamProtocol with transport.set_protocol(), writes the 101 through an ordinary
StreamResponse, and then waits until the stream ends. Swapping *before* the 101 is written
means no byte the client sends after seeing the 101 can land in aiohttp's parser. aiohttp's
protocol no longer hears from the transport, so connection_lost is forwarded to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from aiohttp import hdrs, web

from migrator import metrics
from migrator.protocol import frames
from migrator.protocol.frames import PageRequest, ReplyHeader
from migrator.protocol.handshake import STREAMS, UPGRADE_TOKEN

from .appkeys import IMAGE_KEY, STATS_KEY, STREAMS_KEY
from .stats import Counters

log = logging.getLogger("migrator.source")

INLINE_MAX = 64 << 10  # replies up to this size are written at once, straight from data_received
SLICE = 256 << 10  # larger replies go out in slices of this size, yielding to the loop in between
WRITE_HIGH, WRITE_LOW = 512 << 10, 128 << 10  # transport buffer limits (pause/resume writing)
MAX_QUEUED = 1024  # requests waiting for their turn; beyond this, stop reading the socket
MAX_SESSION_LENGTH = 256
# An urgent stream is silent for as long as no vCPU faults, which may be minutes, so silence
# alone never closes a stream. Half a request that stops arriving does: a destination writes
# each 16-byte request whole, so only a stuck or hostile peer leaves one unfinished this long.
FRAME_STALL_S = 10.0


class PageStreamProtocol(asyncio.Protocol):
    """Answers PageRequests in order with a ReplyHeader and the page bytes, or an error reply."""

    def __init__(self, kind: str, session: str, view: memoryview, counters: list[Counters],
                 http_protocol: asyncio.BaseProtocol, done: asyncio.Future) -> None:
        self.kind = kind
        self.session = session
        self._view = view
        self._size = len(view)
        self._counters = counters  # the stream kind's and the session's
        self._latency = metrics.SOURCE_REQUEST_LATENCY.labels(kind)
        self._http_protocol = http_protocol
        self._done = done
        self._decoder = frames.RequestDecoder()
        self._queue: deque[PageRequest] = deque()
        self._transport: asyncio.Transport | None = None
        self._started = False  # the 101 has been written: replies may follow
        self._paused = False  # the transport's buffer is above WRITE_HIGH
        self._reading_paused = False
        self._eof = False
        self._drained: asyncio.Future | None = None
        self._slicer: asyncio.Task | None = None
        self._stall: asyncio.TimerHandle | None = None  # closes a stream stuck mid-request

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)  # type: ignore

    def data_received(self, data: bytes) -> None:
        self._queue.extend(self._decoder.feed(data))
        if len(self._queue) >= MAX_QUEUED and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()
        self._watch_stall()
        self._pump()

    def eof_received(self) -> bool:
        # The client may half-close after its last request: answer what is queued, then close.
        self._eof = True
        self._pump()
        return True

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        else:
            self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._queue.clear()
        self._watch_stall()
        if self._slicer is not None:
            self._slicer.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if not self._done.done():
            self._done.set_result(exc)
        self._http_protocol.connection_lost(exc)

    # serving

    def start(self) -> None:
        """The 101 is out: answer what has arrived and everything that follows."""
        self._started = True
        self._pump()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _pump(self) -> None:
        """Answer queued requests in order until one needs slicing or the transport is full."""
        if not self._started or self._slicer is not None or self._transport is None:
            return
        while self._queue and not self._paused:
            request = self._queue[0]
            problem = request.check(self._size)
            if problem is None and request.length > INLINE_MAX:
                self._slicer = asyncio.get_running_loop().create_task(self._send_sliced(request))
                return
            self._queue.popleft()
            began = time.perf_counter()
            if problem is None:
                start = request.offset
                header = ReplyHeader(request.request_id, frames.OK, start, request.length).encode()
                self._transport.write(header + self._view[start:start + request.length])
                self._count(request.length)
            else:
                self._refuse(request, *problem)
            self._latency.observe(time.perf_counter() - began)
        if self._reading_paused and len(self._queue) < MAX_QUEUED // 2:
            self._reading_paused = False
            self._transport.resume_reading()
            self._watch_stall()
        if self._eof and not self._queue:
            self._transport.close()

    def _watch_stall(self) -> None:
        """(Re)arm the stall timer while part of a request is buffered and we are reading."""
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        if self._decoder.pending and self._transport is not None and not self._reading_paused:
            self._stall = asyncio.get_running_loop().call_later(FRAME_STALL_S, self._stalled)

    def _stalled(self) -> None:
        self._stall = None
        log.warning("closing the %s stream of session %s: %d of %d bytes of a request, then "
                    "nothing for %.0f s", self.kind, self.session, self._decoder.pending,
                    frames.REQUEST.size, FRAME_STALL_S)
        if self._transport is not None:
            self._transport.abort()  # not close(): that would wait for a peer that may not read

    async def _send_sliced(self, request: PageRequest) -> None:
        # asyncio copies whatever the socket does not take at once into its own buffer, so the
        # reply goes out a slice at a time and only while the transport is below WRITE_HIGH.
        began = time.perf_counter()
        try:
            transport = self._transport
            transport.write(ReplyHeader(request.request_id, frames.OK, request.offset,
                                        request.length).encode())
            position, end = request.offset, request.offset + request.length
            while position < end:
                if self._paused:
                    self._drained = asyncio.get_running_loop().create_future()
                    await self._drained
                    self._drained = None
                if self._transport is None:
                    return
                n = min(SLICE, end - position)
                transport.write(self._view[position:position + n])
                position += n
                await asyncio.sleep(0)  # let other streams (an urgent fault) have their turn
            self._count(request.length)
            self._latency.observe(time.perf_counter() - began)
        finally:
            self._slicer = None
            if self._queue and self._queue[0] is request:
                self._queue.popleft()
        self._pump()

    def _refuse(self, request: PageRequest, status: int, message: str) -> None:
        for c in self._counters:
            c.refuse(status)
        self._transport.write(frames.error_reply(request, status, message))

    def _count(self, nbytes: int) -> None:
        for c in self._counters:
            c.add(nbytes)


def _wants_upgrade(request: web.Request) -> bool:
    connection = {t.strip().lower() for t in request.headers.get(hdrs.CONNECTION, "").split(",")}
    return "upgrade" in connection and request.headers.get(hdrs.UPGRADE, "") == UPGRADE_TOKEN


async def handle_stream(request: web.Request) -> web.StreamResponse:
    """GET /v1/stream/{urgent|background}?session=ID with Upgrade: migrator-pages/1."""
    kind = request.match_info["stream"]
    if kind not in STREAMS:
        raise web.HTTPNotFound(text=f"unknown stream {kind!r}: use one of {', '.join(STREAMS)}\n")
    if not _wants_upgrade(request):
        raise web.HTTPUpgradeRequired(
            headers={hdrs.UPGRADE: UPGRADE_TOKEN},
            text=f"a page stream needs the headers 'Connection: Upgrade' and "
                 f"'Upgrade: {UPGRADE_TOKEN}'\n")
    session = request.query.get("session", "")
    if not session or len(session) > MAX_SESSION_LENGTH:
        raise web.HTTPBadRequest(
            text=f"query parameter session is missing or longer than {MAX_SESSION_LENGTH} "
                 f"characters: pass ?session=<migration id>\n")
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("the client went away before the upgrade")

    image, stats, registry = (request.app[k] for k in (IMAGE_KEY, STATS_KEY, STREAMS_KEY))
    record = stats.session(session)
    done: asyncio.Future = asyncio.get_running_loop().create_future()
    counters = [stats.endpoints[kind], getattr(record, kind)]
    stream = PageStreamProtocol(kind, session, image.view, counters, request.protocol, done)
    transport.set_protocol(stream)
    stream.connection_made(transport)
    response = web.StreamResponse(status=101, headers={hdrs.CONNECTION: "Upgrade",
                                                       hdrs.UPGRADE: UPGRADE_TOKEN})
    await response.prepare(request)
    registry.add(stream)
    stats.streams_open[kind] += 1
    record.streams_open += 1
    log.debug("%s stream open for session %s from %s", kind, session, request.remote)
    try:
        stream.start()
        await asyncio.shield(done)
    finally:
        stream.close()
        registry.discard(stream)
        stats.streams_open[kind] -= 1
        record.streams_open -= 1
        log.debug("%s stream closed for session %s", kind, session)
    return response


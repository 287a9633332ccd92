"""Upgraded page streams: after the 101, a connection speaks protocol/frames.py, served in C.

Each stream is its own TCP connection (urgent faults on one, the background pull on another),
served by its own C thread (source/sender.py) with the GIL released, so an urgent request
never waits behind background bytes or behind the interpreter.

Taking the connection over uses aiohttp's public API only: the handler swaps in a Handover
protocol with transport.set_protocol(), writes the 101 through an ordinary StreamResponse,
stops the transport reading, and gives a duplicate of the socket to the sender. Swapping
*before* the 101 is written means no byte the client sends after seeing the 101 can land in
aiohttp's parser: what arrives before the sender starts is handed to it. aiohttp's protocol no
longer hears from the transport, so connection_lost is forwarded to it. Over TLS, the sender
speaks to one end of a local socket pair, and the event loop relays the other end through
the TLS transport.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from aiohttp import hdrs, web

from migrator.protocol.handshake import STREAMS, UPGRADE_TOKEN

from .appkeys import CORRUPTION_KEY, IMAGE_KEY, STATS_KEY, STREAMS_KEY
from .sender import PageSender, cut_short, stalled

log = logging.getLogger("migrator.source")

MAX_SESSION_LENGTH = 256
# An urgent stream is silent for as long as no vCPU faults, which may be minutes, so silence
# alone never closes a stream. Half a request that stops arriving does: a destination writes
# each 16-byte request whole, so only a stuck or hostile peer leaves one unfinished this long.
FRAME_STALL_S = 10.0
_RELAY_HIGH = 4 << 20  # bytes a relay direction buffers before it pauses its reader


class Handover(asyncio.Protocol):
    """Holds the connection between the protocol swap and the sender's start: keeps what the
    client sends meanwhile, and tells aiohttp when the connection goes."""

    def __init__(self, http_protocol: asyncio.BaseProtocol, done: asyncio.Future) -> None:
        self.received = bytearray()
        self.peer: asyncio.Transport | None = None  # TLS: the relay's plain end
        self._http_protocol = http_protocol
        self._done = done
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.write(data)
            if self.peer.get_write_buffer_size() > _RELAY_HIGH:
                self._transport.pause_reading()
        else:
            self.received += data

    def eof_received(self) -> bool:
        if self.peer is not None and self.peer.can_write_eof():
            self.peer.write_eof()
        return True

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()
        if not self._done.done():
            self._done.set_result(exc)
        self._http_protocol.connection_lost(exc)


class _RelayEnd(asyncio.Protocol):
    """The event loop's end of the local pair: the sender's replies go out through TLS."""

    def __init__(self, tls: asyncio.Transport, handover: Handover) -> None:
        self._tls, self._handover = tls, handover
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._tls.write(data)

    def pause_writing(self) -> None:
        self._tls.pause_reading()

    def resume_writing(self) -> None:
        self._tls.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._tls.close()


async def _sender_socket(transport: asyncio.Transport, handover: Handover) -> int:
    """A socket for the sender: a duplicate of the connection's, or over TLS one end of a
    pair whose other end the event loop relays. Returns its file descriptor, for a PageSender to
    own (it closes it)."""
    if transport.get_extra_info("sslcontext") is None:
        transport.pause_reading()
        while transport.get_write_buffer_size():  # the 101 must be out before the sender writes
            await asyncio.sleep(0.001)
        return os.dup(transport.get_extra_info("socket").fileno())
    mine, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    peer, _ = await loop.connect_accepted_socket(lambda: _RelayEnd(transport, handover), theirs)
    peer.set_write_buffer_limits(high=_RELAY_HIGH)
    handover.peer = peer
    if handover.received:
        peer.write(bytes(handover.received))
        handover.received.clear()
    fd = os.dup(mine.fileno())
    mine.close()
    return fd


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
    corruption = request.app.get(CORRUPTION_KEY)
    if corruption is not None and record.served_wrong is None:
        record.served_wrong = corruption.session_map()
    loop = asyncio.get_running_loop()
    closed: asyncio.Future = loop.create_future()
    handover = Handover(request.protocol, closed)
    transport.set_protocol(handover)
    handover.connection_made(transport)
    response = web.StreamResponse(status=101, headers={hdrs.CONNECTION: "Upgrade",
                                                       hdrs.UPGRADE: UPGRADE_TOKEN})
    await response.prepare(request)
    fd = await _sender_socket(transport, handover)
    try:
        sender = PageSender(kind, fd, image.view, bytes(handover.received),
                            [stats.endpoints[kind], getattr(record, kind)], FRAME_STALL_S,
                            corruption, record.served_wrong)
    except BaseException:
        os.close(fd)
        raise
    ended: asyncio.Future = loop.create_future()
    registry.add(sender)
    stats.senders.add(sender)
    stats.streams_open[kind] += 1
    record.streams_open += 1
    log.debug("%s stream open for session %s from %s", kind, session, request.remote)
    try:
        sender.serve(lambda rc: loop.call_soon_threadsafe(
            lambda: ended.done() or ended.set_result(rc)))
        await asyncio.wait([ended, closed], return_when=asyncio.FIRST_COMPLETED)
        if not ended.done():  # the connection went first: make the sender return
            sender.stop()
        rc = await asyncio.shield(ended)
        if stalled(rc):
            log.warning("closing the %s stream of session %s: half a request, then nothing "
                        "for %.0f s", kind, session, FRAME_STALL_S)
            transport.abort()  # not close(): that would wait for a peer that may not read
        elif cut_short(rc):
            log.info("closing the %s stream of session %s after an injected short frame",
                     kind, session)
            transport.close()
        else:
            transport.close()
    finally:
        if not ended.done():
            sender.stop()  # its thread closes fd when it returns
        registry.discard(sender)
        stats.senders.discard(sender)
        stats.streams_open[kind] -= 1
        record.streams_open -= 1
        log.debug("%s stream closed for session %s", kind, session)
    return response

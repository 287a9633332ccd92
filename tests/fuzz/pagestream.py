"""Page-stream plumbing for tests that speak frames to a real source over raw sockets."""

from __future__ import annotations

import socket

from migrator.protocol import PAGE_SIZE
from migrator.protocol.digest import page_digest
from migrator.protocol.frames import REPLY, ReplyHeader
from migrator.protocol.handshake import UPGRADE_TOKEN

from .conftest import AUTH
from .rawhttp import connect, read_reply, request_bytes


def assert_pages(manifest, offset: int, data: bytes) -> None:
    for i in range(0, len(data), PAGE_SIZE):
        page = (offset + i) // PAGE_SIZE
        assert page_digest(data[i:i + PAGE_SIZE]) == manifest.digests[page], f"page {page}"


def recv_exactly(s: socket.socket, n: int, pending: bytes = b"") -> tuple[bytes, bytes]:
    buf = pending
    while len(buf) < n:
        chunk = s.recv(max(n - len(buf), 1 << 16))
        if not chunk:
            raise ConnectionError(f"stream closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf[:n], buf[n:]


def read_frame_reply(s: socket.socket, pending: bytes = b""):
    raw, pending = recv_exactly(s, REPLY.size, pending)
    header = ReplyHeader.decode(raw)
    body, pending = recv_exactly(s, header.length, pending)
    assert not pending
    return header, body


def upgraded(source, stream: str = "urgent", session: str = "fuzz") -> tuple[socket.socket, bytes]:
    s = connect(source.port, timeout=10)
    s.sendall(request_bytes("GET", f"/v1/stream/{stream}?session={session}",
                            AUTH + [("Connection", "Upgrade"), ("Upgrade", UPGRADE_TOKEN)],
                            close=False))
    reply = read_reply(s)
    assert reply is not None and reply.status == 101, reply
    return s, reply.body

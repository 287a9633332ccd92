"""The HTTP/1.1 Upgrade that turns a connection into a page stream (QEMU's preempt channel idea).

Two streams per migration, each its own TCP connection, so urgent pages are never queued
behind background data: `urgent` carries vCPU faults, `background` the bulk pull.
"""

from __future__ import annotations

from urllib.parse import quote

from . import PREFIX
from .errors import ProtocolError

UPGRADE_TOKEN = "migrator-pages/1"
STREAMS = ("urgent", "background")
MAX_RESPONSE_HEAD = 8192


def stream_path(stream: str) -> str:
    if stream not in STREAMS:
        raise ProtocolError(f"unknown stream {stream!r}: use one of {', '.join(STREAMS)}")
    return f"{PREFIX}/stream/{stream}"


def upgrade_request(host: str, stream: str, token: str | None, session: str,
                    path_prefix: str = "") -> bytes:
    """The request head; path_prefix is the base URL's path when the source sits behind one."""
    lines = [
        f"GET {path_prefix.rstrip('/')}{stream_path(stream)}?session={quote(session, safe='')} "
        "HTTP/1.1",
        f"Host: {host}",
        "Connection: Upgrade",
        f"Upgrade: {UPGRADE_TOKEN}",
    ]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def check_upgrade_response(head: bytes) -> None:
    """Raise ProtocolError unless head (up to and including the blank line) is a 101."""
    try:
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        _, code, *reason = status_line.split(" ", 2)
    except ValueError as e:
        raise ProtocolError(f"not an HTTP response: {head[:80]!r}") from e
    if code != "101":
        body = head.split(b"\r\n\r\n", 1)[-1][:300].decode("utf-8", "replace")
        raise ProtocolError(f"page stream refused: HTTP {code} {' '.join(reason)} {body}".strip())

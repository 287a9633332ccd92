"""A deliberately dumb HTTP/1.1 client on raw sockets: it sends exactly the bytes it is given
(no client library would send the malformed requests the fuzz tests need) and reads one reply."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

MAX_REPLY = 128 << 20  # read at most this much of a reply body


@dataclass
class Reply:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, last one wins
    body: bytes = b""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Hung(AssertionError):
    """The server neither answered nor closed the connection in time."""


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def request_bytes(method: str, target: str, headers: list[tuple[str, str]] | None = None,
                  body: bytes = b"", close: bool = True) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def exchange(port: int, data: bytes, timeout: float = 5.0, head: bool = False) -> Reply | None:
    """Send data, read one reply; None if the server closed (or reset) without one."""
    with connect(port, timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it may have answered and closed before reading everything: read on
        return read_reply(s, timeout, head)


def read_reply(s: socket.socket, timeout: float = 5.0, head: bool = False) -> Reply | None:
    deadline = time.monotonic() + timeout
    buf = b""

    def more() -> bytes:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            return s.recv(1 << 16)
        except TimeoutError:
            raise Hung(f"no complete reply within {timeout} s; got {buf[:200]!r}") from None
        except ConnectionResetError:
            return b""

    while b"\r\n\r\n" not in buf:
        chunk = more()
        if not chunk:
            if buf:
                raise AssertionError(f"connection closed inside a reply head: {buf[:200]!r}")
            return None
        buf += chunk
    head_bytes, _, rest = buf.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    version, status, *reason = status_line.split(" ", 2)
    assert version.startswith("HTTP/1."), status_line
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    reply = Reply(int(status), reason[0] if reason else "", headers)
    if head or reply.status in (101, 204, 304) or 100 <= reply.status < 200:
        reply.body = rest
        return reply
    if "content-length" in headers:
        want = int(headers["content-length"])
        assert want <= MAX_REPLY, f"reply of {want} bytes"
        while len(rest) < want:
            chunk = more()
            if not chunk:
                raise AssertionError(f"reply body cut at {len(rest)} of {want} bytes")
            rest += chunk
        reply.body = rest[:want]
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = more()
            if not chunk:
                break
            rest += chunk
            assert len(rest) <= MAX_REPLY
        reply.body = _dechunk(rest)
    else:
        while chunk := more():
            rest += chunk
            assert len(rest) <= MAX_REPLY
        reply.body = rest
    return reply


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


def closed_by_peer(s: socket.socket) -> bool:
    """True if the peer has closed s (EOF or reset); never blocks. Reads (and drops) whatever
    the peer sent before closing, e.g. an error reply."""
    s.setblocking(False)
    try:
        while True:
            if s.recv(1 << 16) == b"":
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)

"""A page stream to the source, from blocking code (the destination's fault thread).

One PageStream is one TCP connection, upgraded with HTTP/1.1 101 to the binary framing of
protocol/frames.py. Requests may be pipelined with send(); replies come back in order. Page
bytes are received straight into the caller's memory (socket.recv_into), never copied.
A PageStream is not thread-safe: give each thread its own.
"""

from __future__ import annotations

import socket
import ssl

from migrator.protocol import frames
from migrator.protocol.errors import ProtocolError
from migrator.protocol.frames import REPLY, REQUEST, ReplyHeader
from migrator.protocol.handshake import (
    MAX_RESPONSE_HEAD, check_upgrade_response, stream_path, upgrade_request,
)

from ._url import BaseURL
from .relay import TLSRelay
from .errors import (
    SourceRefused, SourceUnreachable, StreamBroken, StreamError, Unauthorized, reason,
    tls_failure,
)

MAX_ERROR_MESSAGE = 64 << 10  # an error reply's body longer than this means the stream is lost

__all__ = ["PageStream", "StreamError"]


class PageStream:
    def __init__(self, base_url: str, stream: str, token: str | None, session: str,
                 timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None) -> None:
        base = BaseURL.parse(base_url)
        self.url = base.url(stream_path(stream))
        self.stream = stream
        self.session = session
        self._pending = b""  # bytes read past the 101's head (none, from a well-behaved source)
        self._header = bytearray(REPLY.size)
        self._header_view = memoryview(self._header)
        self._relay: TLSRelay | None = None
        try:
            sock = socket.create_connection((base.host, base.port), timeout=timeout)
        except OSError as e:
            raise SourceUnreachable(f"cannot connect to {self.url}: {reason(e)}",
                                    url=self.url) from e
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if base.https:
                context = ssl_context or ssl.create_default_context()
                try:
                    sock = context.wrap_socket(sock, server_hostname=base.host)
                except ssl.SSLError as e:
                    raise (tls_failure(e, self.url) or SourceUnreachable(
                        f"TLS handshake with {self.url} failed: {reason(e)}",
                        url=self.url)) from e
                except OSError as e:  # reset or timed out mid-handshake
                    raise SourceUnreachable(f"TLS handshake with {self.url} failed: "
                                            f"{reason(e)}", url=self.url) from e
            self._sock = sock
            self._upgrade(base, token)
        except BaseException:
            sock.close()
            raise

    def _upgrade(self, base: BaseURL, token: str | None) -> None:
        self._sendall(upgrade_request(base.host_header, self.stream, token, self.session,
                                      path_prefix=base.prefix))
        head = b""
        while b"\r\n\r\n" not in head:
            if len(head) > MAX_RESPONSE_HEAD:
                raise StreamBroken(f"{self.url} answered the upgrade with an over-long head",
                                   url=self.url)
            chunk = self._recv(4096)
            if not chunk:
                raise StreamBroken(f"{self.url} closed the connection during the upgrade",
                                   url=self.url)
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        status = _status_code(head)
        if status == 101:
            self._pending = rest
            return
        body = rest + self._read_body(head, len(rest))
        try:
            check_upgrade_response(head + b"\r\n\r\n" + body)
            message = f"{self.url} did not upgrade (HTTP {status})"
        except ProtocolError as e:
            message = f"{self.url}: {e}"
        if status == 401:
            raise Unauthorized(f"{message}: check the token (--token-file or MIGRATOR_TOKEN)",
                               url=self.url, status=401)
        raise SourceRefused(message, url=self.url, status=status)

    def _read_body(self, head: bytes, have: int) -> bytes:
        """The rest of a refusal's body (at most 4 KiB), for its message."""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                want = min(int(value), 4096) - have
                body = b""
                while len(body) < want:
                    chunk = self._recv(want - len(body))
                    if not chunk:
                        break
                    body += chunk
                return body
        return b""

    # requests and replies

    def send(self, request_id: int, offset: int, length: int) -> None:
        """Queue a request (pipelining is fine); its reply comes after those sent before it."""
        self._sendall(REQUEST.pack(request_id, offset, length))

    def recv_header(self) -> ReplyHeader:
        """The next reply's header; for a non-OK reply, reads its message and raises StreamError."""
        self.recv_into(self._header_view)
        header = ReplyHeader.decode(self._header)
        if header.status != frames.OK:
            if header.length > MAX_ERROR_MESSAGE:
                self.close()
                raise StreamBroken(f"{self.url} sent an error reply of {header.length} bytes; "
                                   f"the stream is out of step", url=self.url)
            body = bytearray(header.length)
            self.recv_into(memoryview(body))
            raise StreamError(header.status, body.decode("utf-8", "replace"), header.request_id)
        return header

    def recv_into(self, view: memoryview) -> None:
        """Fill view with exactly len(view) bytes of the stream, straight from the socket."""
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        size, got = len(view), 0
        if self._pending:
            got = min(size, len(self._pending))
            view[:got] = self._pending[:got]
            self._pending = self._pending[got:]
        sock = self._sock
        if sock is None:
            raise StreamBroken(f"stream to {self.url} is closed", url=self.url)
        try:
            while got < size:
                n = sock.recv_into(view[got:])
                if n == 0:
                    raise StreamBroken(f"{self.url} closed the stream with {size - got} bytes "
                                       f"of a reply outstanding", url=self.url)
                got += n
        except TimeoutError as e:
            raise StreamBroken(f"no data from {self.url} for {sock.gettimeout()} s "
                               f"({size - got} bytes of a reply outstanding)", url=self.url) from e
        except StreamBroken:
            raise
        except OSError as e:
            raise StreamBroken(f"stream to {self.url} failed: {reason(e)}", url=self.url) from e

    def handover(self) -> int:
        """A file descriptor for a C loop to speak frames on, straight to the source: this
        stream's own socket, or, over TLS, one end of a local pair relayed through TLS.
        The stream keeps owning it: close() closes it."""
        if self._sock is None:
            raise StreamBroken(f"stream to {self.url} is closed", url=self.url)
        if self._pending:
            raise StreamBroken(f"{self.url} sent {len(self._pending)} bytes before any request: "
                               f"the stream is out of step", url=self.url)
        if isinstance(self._sock, ssl.SSLSocket):
            if self._relay is None:
                self._relay = TLSRelay(self._sock)
            return self._relay.fileno()
        return self._sock.fileno()

    def close(self) -> None:
        sock, self._sock = getattr(self, "_sock", None), None
        relay, self._relay = getattr(self, "_relay", None), None
        if relay is not None:
            relay.close()
        if sock is not None:
            sock.close()

    def __enter__(self) -> PageStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PageStream({self.url}, session={self.session!r})"

    # socket plumbing

    def _sendall(self, data: bytes) -> None:
        if self._sock is None:
            raise StreamBroken(f"stream to {self.url} is closed", url=self.url)
        try:
            self._sock.sendall(data)
        except OSError as e:
            raise StreamBroken(f"stream to {self.url} failed: {reason(e)}", url=self.url) from e

    def _recv(self, n: int) -> bytes:
        try:
            return self._sock.recv(n)
        except TimeoutError as e:
            raise StreamBroken(f"no answer from {self.url} within {self._sock.gettimeout()} s",
                               url=self.url) from e
        except OSError as e:
            raise StreamBroken(f"stream to {self.url} failed: {reason(e)}", url=self.url) from e


def _status_code(head: bytes) -> int:
    try:
        return int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


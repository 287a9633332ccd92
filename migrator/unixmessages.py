"""JSON messages (and file descriptors) over a UNIX stream socket.

Each message is a 4-byte little-endian length and a UTF-8 JSON object. File descriptors ride
with SCM_RIGHTS on the first byte of the message that carries them.
"""

from __future__ import annotations

import json
import os
import socket
import struct

from .protocol.errors import ProtocolError
from .protocol.guest import MAX_MESSAGE_BYTES

_LEN = struct.Struct("<I")
MAX_FDS = 8


def send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    body = json.dumps(message, separators=(",", ":")).encode()
    data = _LEN.pack(len(body)) + body
    if fds:
        n = socket.send_fds(sock, [data[:1]], fds)
        sock.sendall(data[n:])
    else:
        sock.sendall(data)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed the socket mid-message" if buf else "peer closed the socket")
        buf += chunk
    return bytes(buf)


def recv(sock: socket.socket, *, expect_fds: int = 0) -> tuple[object, list[int]]:
    """One message and the fds that came with it (fewer or more than expected is the caller's check).

    Raises ProtocolError for a message that is not JSON (or too long, or nested too deep) and
    ConnectionError when the peer goes away; fds that came with a refused message are closed.
    """
    fds: list[int] = []
    try:
        if expect_fds:
            first, fds, _, _ = socket.recv_fds(sock, 1, MAX_FDS)
            if not first:
                raise ConnectionError("peer closed the socket")
            head = first + _recv_exactly(sock, _LEN.size - 1)
        else:
            head = _recv_exactly(sock, _LEN.size)
        (length,) = _LEN.unpack(head)
        if length > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"message of {length} bytes exceeds the limit {MAX_MESSAGE_BYTES}")
        body = _recv_exactly(sock, length)
        try:
            return json.loads(body, parse_constant=_no_constant), fds
        except RecursionError:
            raise ProtocolError("message is not JSON: nested too deeply") from None
        except ValueError as e:  # also UnicodeDecodeError, and integers of > 4300 digits
            raise ProtocolError(f"message is not JSON: {e}") from e
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")

"""Frames on an upgraded page stream (after HTTP 101): fixed little-endian headers.

Destination -> source, a page request (16 bytes):   u32 request_id | u64 offset | u32 length
Source -> destination, a reply header (20 bytes):   u32 request_id | u16 status | u16 0 |
                                                    u64 offset | u32 length
then `length` bytes: page data when status is OK, else a UTF-8 message saying what was wrong.
Offsets and lengths are bytes in the image and must be 4 KiB aligned.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import PAGE_SIZE
from .errors import ProtocolError

REQUEST = struct.Struct("<IQI")
REPLY = struct.Struct("<IHHQI")
MAX_REQUEST_LENGTH = 1 << 30  # one 1 GiB huge page; the source streams it, never buffers it

OK, BAD_REQUEST, OUT_OF_RANGE = 0, 400, 416


@dataclass(frozen=True, slots=True)
class PageRequest:
    request_id: int
    offset: int
    length: int

    def encode(self) -> bytes:
        return REQUEST.pack(self.request_id, self.offset, self.length)

    def check(self, image_size: int) -> tuple[int, str] | None:
        """None if servable, else (status, message)."""
        if self.length == 0 or self.offset % PAGE_SIZE or self.length % PAGE_SIZE:
            return BAD_REQUEST, (f"range {self.offset}+{self.length} is not a non-empty, "
                                 f"{PAGE_SIZE}-byte aligned range")
        if self.length > MAX_REQUEST_LENGTH:
            return BAD_REQUEST, f"length {self.length} exceeds the limit {MAX_REQUEST_LENGTH}"
        if self.offset + self.length > image_size:
            return OUT_OF_RANGE, (f"range {self.offset}+{self.length} is outside the image "
                                  f"of {image_size} bytes")
        return None


@dataclass(frozen=True, slots=True)
class ReplyHeader:
    request_id: int
    status: int
    offset: int
    length: int

    def encode(self) -> bytes:
        return REPLY.pack(self.request_id, self.status, 0, self.offset, self.length)

    @classmethod
    def decode(cls, data: bytes | memoryview) -> ReplyHeader:
        if len(data) != REPLY.size:
            raise ProtocolError(f"a reply header is {REPLY.size} bytes, not {len(data)}")
        request_id, status, _, offset, length = REPLY.unpack(data)
        return cls(request_id, status, offset, length)


class RequestDecoder:
    """Incremental decoder for the source side: feed bytes, get whole PageRequests."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[PageRequest]:
        self._buf += data
        n = len(self._buf) // REQUEST.size
        if n == 0:
            return []
        out = [PageRequest(*REQUEST.unpack_from(self._buf, i * REQUEST.size)) for i in range(n)]
        del self._buf[: n * REQUEST.size]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete request received so far (0 between whole requests)."""
        return len(self._buf)


def error_reply(request: PageRequest, status: int, message: str) -> bytes:
    # at most 4 KiB, cut at a character boundary so the message stays valid UTF-8
    body = message.encode()[:4096].decode("utf-8", "ignore").encode()
    if status == OK:
        raise ProtocolError("an error reply needs a non-OK status")
    return ReplyHeader(request.request_id, status, request.offset, len(body)).encode() + body

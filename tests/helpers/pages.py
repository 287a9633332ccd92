"""Fetching pages over a page stream the plain way: one request, one reply, in Python.

The destination's own fetching is C (migrator/_cffi_src/dest_fetch.c); this is the second,
independent reader of the frames the tests hold the source to.
"""

from __future__ import annotations

import itertools

from migrator.client.stream import PageStream
from migrator.protocol.errors import ProtocolError

_ids = itertools.count(1)


def fetch_into(stream: PageStream, offset: int, length: int, view: memoryview) -> None:
    """Fetch image bytes [offset, offset + length) into view[:length]; the reply's header must
    match the request. Do not mix with pipelined sends whose replies are unread."""
    if len(view) < length:
        raise ValueError(f"a view of {len(view)} bytes cannot hold {length} bytes")
    request_id = next(_ids) & 0xFFFFFFFF
    stream.send(request_id, offset, length)
    header = stream.recv_header()
    if (header.request_id, header.offset, header.length) != (request_id, offset, length):
        stream.close()
        raise ProtocolError(f"{stream.url} answered request {request_id} for {offset}+{length} "
                            f"with {header}: the stream is out of step")
    stream.recv_into(view[:length] if len(view) != length else view)

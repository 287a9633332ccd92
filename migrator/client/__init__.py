"""Blocking clients of the source (no asyncio): used by the destination's fault thread and tools.

- stream: PageStream, one upgraded page stream (urgent or background)
- http: fetch_manifest, fetch_pages
- errors: what can go wrong; connection-level failures are ConnectionErrors naming the URL,
  a TLS handshake no retry can fix is a SourceTLSError
"""

from .errors import (
    SourceRefused, SourceTLSError, SourceUnreachable, StreamError, Unauthorized,
)
from .http import fetch_manifest, fetch_pages
from .stream import PageStream

__all__ = [
    "PageStream", "SourceRefused", "SourceTLSError", "SourceUnreachable", "StreamError",
    "Unauthorized", "fetch_manifest", "fetch_pages",
]

"""Plain HTTP requests to a source, from blocking code: the manifest, and page reads for tools."""

from __future__ import annotations

import http.client
import ssl

from migrator.protocol import PREFIX
from migrator.protocol.errors import ProtocolError
from migrator.protocol.manifest import MAX_MANIFEST_BYTES, Manifest

from ._url import BaseURL
from .errors import (
    SourceRefused, SourceUnreachable, StreamBroken, Unauthorized, reason, tls_failure,
)

__all__ = ["fetch_manifest", "fetch_pages", "get"]


def fetch_manifest(base_url: str, token: str | None, timeout: float = 30.0,
                   ssl_context: ssl.SSLContext | None = None) -> Manifest:
    body = get(base_url, f"{PREFIX}/manifest", token, timeout, ssl_context,
               limit=MAX_MANIFEST_BYTES)
    try:
        return Manifest.decode(body)
    except ProtocolError as e:
        raise ProtocolError(f"{BaseURL.parse(base_url).url(PREFIX + '/manifest')}: {e}") from e


def fetch_pages(base_url: str, token: str | None, offset: int, length: int,
                timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> bytes:
    """The image's bytes [offset, offset + length) through GET /v1/pages (for tools and tests)."""
    return get(base_url, f"{PREFIX}/pages?offset={offset}&length={length}", token, timeout,
               ssl_context)


def get(base_url: str, path: str, token: str | None, timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None, limit: int | None = None) -> bytes:
    """GET base_url + path; the body of a 200, else SourceRefused/Unauthorized with its message."""
    base = BaseURL.parse(base_url)
    url = base.url(path)
    if base.https:
        conn = http.client.HTTPSConnection(base.host, base.port, timeout=timeout,
                                           context=ssl_context or ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(base.host, base.port, timeout=timeout)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        try:
            conn.request("GET", base.prefix + path, headers=headers)
        except ssl.SSLError as e:  # the handshake
            raise (tls_failure(e, url) or SourceUnreachable(
                f"TLS handshake with {url} failed: {reason(e)}", url=url)) from e
        except OSError as e:
            raise SourceUnreachable(f"cannot connect to {url}: {reason(e)}", url=url) from e
        try:
            response = conn.getresponse()
            if response.status == 200 and limit is not None and (response.length or 0) > limit:
                raise StreamBroken(f"{url} sent {response.length} bytes, more than the "
                                   f"{limit} allowed", url=url)
            body = response.read(limit + 1 if limit is not None else None)
        except (OSError, http.client.HTTPException) as e:
            hint = (" (is the source serving HTTPS? then write https://)"
                    if isinstance(e, http.client.RemoteDisconnected) and not base.https else "")
            raise StreamBroken(f"request to {url} failed: {reason(e)}{hint}", url=url) from e
    finally:
        conn.close()
    if response.status == 200:
        return body
    message = body[:1000].decode("utf-8", "replace").strip()
    if response.status == 401:
        raise Unauthorized(f"{url}: HTTP 401 {message}: check the token (--token-file or "
                           f"MIGRATOR_TOKEN)", url=url, status=401)
    raise SourceRefused(f"{url}: HTTP {response.status} {message}", url=url,
                        status=response.status)


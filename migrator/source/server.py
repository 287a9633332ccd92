"""The source's HTTP API (aiohttp): manifest, bounded page reads, page streams, status, health.

    GET /healthz                      200 "ok", no token needed
    GET /v1/manifest                  the image's Manifest, msgpack
    GET /v1/pages?offset=&length=     raw page bytes, 4 KiB aligned, at most 1 GiB
    GET /v1/stream/{urgent,background}?session=ID  Upgrade: migrator-pages/1 -> 101, frames.py
    GET /v1/status                    JSON: image, sessions, what each stream has served
    GET /metrics                      Prometheus (migrator.metrics' source metrics)

Every path but /healthz needs `Authorization: Bearer <token>` when the source has a token.
"""

from __future__ import annotations

import logging
import re
import time

from aiohttp import hdrs, web

from migrator import metrics
from migrator.webauth import refuse_bodies, require_token
from migrator.protocol import API_VERSION, PAGE_SIZE, PREFIX, frames
from migrator.protocol.frames import PageRequest

from .appkeys import CORRUPTION_KEY, IMAGE_KEY, MANIFEST_KEY, STATS_KEY, STREAMS_KEY, TOKEN_KEY
from .image import GuestImage
from .inject import Corruption
from .served import Stats
from .streams import handle_stream

log = logging.getLogger("migrator.source")

PAGES_SLICE = 1 << 20  # /v1/pages writes the image in slices of at most this many bytes
MSGPACK = "application/msgpack"
_DECIMAL = re.compile(r"[0-9]{1,20}")  # 20 digits hold any u64
_ENDPOINTS = {f"{PREFIX}/manifest": "manifest", f"{PREFIX}/pages": "pages",
              f"{PREFIX}/stream/urgent": "urgent", f"{PREFIX}/stream/background": "background",
              f"{PREFIX}/status": "status", "/metrics": "metrics"}  # metric labels, by path


def _count_unauthorized(request: web.Request) -> None:
    request.app[STATS_KEY].unauthorized[_ENDPOINTS.get(request.path, "other")] += 1


async def _unknown_version(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text=f"{request.path} is not served: this source speaks API "
                                f"v{API_VERSION} ({PREFIX}/...); upgrade both daemons together\n")


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _manifest(request: web.Request) -> web.Response:
    body = request.app[MANIFEST_KEY]
    request.app[STATS_KEY].endpoints["manifest"].add(0)
    return web.Response(body=body, content_type=MSGPACK)


def _int_param(request: web.Request, name: str) -> int:
    what = f"a non-negative multiple of {PAGE_SIZE}, in bytes"
    raw = request.query.get(name)
    if raw is None:
        raise web.HTTPBadRequest(text=f"missing query parameter {name}: pass {name}=<{what}>\n")
    # ASCII digits only: int() would also take "-0", " 12", "1_000" and other scripts' digits
    if not _DECIMAL.fullmatch(raw):
        problem = "is negative" if raw.startswith("-") else "is not a decimal integer"
        raise web.HTTPBadRequest(text=f"query parameter {name}={raw[:40]!r} {problem}: "
                                      f"pass {what}\n")
    return int(raw)


async def _pages(request: web.Request) -> web.StreamResponse:
    began = time.perf_counter()
    image: GuestImage = request.app[IMAGE_KEY]
    counters = request.app[STATS_KEY].endpoints["pages"]
    try:
        offset, length = _int_param(request, "offset"), _int_param(request, "length")
    except web.HTTPBadRequest:
        counters.refuse(400)
        raise
    problem = PageRequest(0, offset, length).check(image.size)
    if problem is not None:
        status, message = problem
        counters.refuse(status)
        if status == frames.OUT_OF_RANGE:
            raise web.HTTPRequestRangeNotSatisfiable(
                text=message + "\n", headers={hdrs.CONTENT_RANGE: f"bytes */{image.size}"})
        raise web.HTTPBadRequest(text=f"{message}: pass offset and length as multiples of "
                                      f"{PAGE_SIZE}, length at most {frames.MAX_REQUEST_LENGTH}\n")
    response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "application/octet-stream"})
    response.content_length = length
    await response.prepare(request)
    # Slices of the mmap, never a copy of the whole range: write() waits for the transport to
    # drain, so a request holds at most about one slice of memory however long it is.
    view = image.view
    start = offset
    try:
        for start in range(offset, offset + length, PAGES_SLICE):
            await response.write(view[start:min(start + PAGES_SLICE, offset + length)])
        await response.write_eof()
    except ConnectionError:
        # The client went away mid-body; aiohttp closes the connection, nothing else to do.
        log.debug("pages %d+%d: client gone after %d bytes", offset, length, start - offset)
        return response
    counters.add(length)
    metrics.SOURCE_REQUEST_LATENCY.labels("pages").observe(time.perf_counter() - began)
    return response


async def _status(request: web.Request) -> web.Response:
    image: GuestImage = request.app[IMAGE_KEY]
    return web.json_response({
        "image": {"id": image.image_id, "origin": image.origin, "size": image.size,
                  "pages": image.pages, "page_size": PAGE_SIZE,
                  "regions": [{"name": r.name, "offset": r.offset, "size": r.size}
                              for r in image.regions]},
        "auth": request.app.get(TOKEN_KEY) is not None,
        "inject_corruption": (request.app[CORRUPTION_KEY].as_json()
                              if CORRUPTION_KEY in request.app else None),
        **request.app[STATS_KEY].as_json(),
    })


async def _metrics(request: web.Request) -> web.Response:
    request.app[STATS_KEY].sync_metrics()
    body, content_type = metrics.exposition(request.headers.get(hdrs.ACCEPT))
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})


async def _close_streams(app: web.Application) -> None:
    for sender in list(app[STREAMS_KEY]):
        sender.stop()


def _create_series() -> None:
    """Export the page-serving series at zero from the start: a series born with its first
    increment hides that increment from rate() and increase(). Here, not at import: every
    process that imports this module (the destination's CLI does) would export them too."""
    for endpoint in ("pages", "urgent", "background"):
        metrics.SOURCE_REQUEST_LATENCY.labels(endpoint)
        metrics.SOURCE_SERVED_BYTES.labels(endpoint)
        metrics.SOURCE_REQUESTS.labels(endpoint, "ok")


def create_app(image: GuestImage, token: str | None = None,
               corruption: Corruption | None = None) -> web.Application:
    """The source's aiohttp application serving image; token None means no auth; corruption:
    wrong bytes to inject into page stream replies (None: none)."""
    _create_series()
    app = web.Application(middlewares=[require_token(token, on_reject=_count_unauthorized), refuse_bodies()],
                          client_max_size=64 << 10)
    app[IMAGE_KEY] = image
    app[STATS_KEY] = Stats()
    app[STREAMS_KEY] = set()
    if token is not None:
        app[TOKEN_KEY] = token
    if corruption is not None:
        app[CORRUPTION_KEY] = corruption
    app[MANIFEST_KEY] = image.manifest.encode()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get(f"{PREFIX}/manifest", _manifest)
    app.router.add_get(f"{PREFIX}/pages", _pages)
    app.router.add_get(f"{PREFIX}/status", _status)
    # GET only: aiohttp would also route HEAD here, and a HEAD must not turn into a stream
    app.router.add_get(f"{PREFIX}/stream/{{stream}}", handle_stream, allow_head=False)
    app.router.add_get("/metrics", _metrics)
    # last, so it never shadows a v1 route: /v2/..., /v0/... say which version is spoken here
    app.router.add_route("*", r"/{version:v(?!%d/)[0-9]+}/{tail:.*}" % API_VERSION,
                         _unknown_version)
    app.on_shutdown.append(_close_streams)
    return app

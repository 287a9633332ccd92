"""Gates in front of a daemon's HTTP endpoints (aiohttp middleware): bearer token, bodies."""

from __future__ import annotations

from typing import Callable, Iterable

from aiohttp import hdrs, web

from .auth import bearer_matches


def require_token(token: str | None, public: Iterable[str] = ("/healthz",),
                  on_reject: Callable[[web.Request], None] | None = None):
    """Middleware: every path but the public ones needs `Authorization: Bearer <token>`.

    A missing, malformed or wrong token get the same 401, so nothing tells which part was
    wrong; the comparison is constant-time. token None turns the gate off.
    """
    public = frozenset(public)

    @web.middleware
    async def gate(request: web.Request, handler):
        if token is not None and request.path not in public:
            if not bearer_matches(request.headers.get(hdrs.AUTHORIZATION), token):
                if on_reject:
                    on_reject(request)
                raise web.HTTPUnauthorized(text="unauthorized\n",
                                           headers={hdrs.WWW_AUTHENTICATE: "Bearer"})
        return await handler(request)

    return gate


def refuse_bodies(accepting: Iterable[str] = ()):
    """Middleware: a request body is refused at once with 413 (reading and dropping a large one
    would tie the connection up), except on the methods in `accepting`, whose size aiohttp's
    client_max_size bounds."""
    accepting = frozenset(accepting)

    @web.middleware
    async def gate(request: web.Request, handler):
        routed = request.match_info.http_exception is None  # else a 404/405 says more
        if routed and request.body_exists and request.method not in accepting:
            raise web.HTTPRequestEntityTooLarge(
                max_size=0, actual_size=request.content_length or 0,
                text=f"{request.method} {request.path} takes no request body; send it without one\n")
        return await handler(request)

    return gate

"""The bearer-token gate in front of a daemon's HTTP endpoints (aiohttp middleware)."""

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

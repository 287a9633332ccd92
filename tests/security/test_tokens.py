"""Bearer tokens on both daemons (over TLS): every endpoint but health refuses a missing,
malformed or wrong token with the same 401, whatever was wrong.

tests/source/test_http.py and tests/e2e/test_dest_http.py check the plain-HTTP basics; this
adds malformed headers (another scheme, a bare token, bytes that are not UTF-8) and every
endpoint of the destination.
"""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import pytest

from e2e.conftest import TOKEN

SOURCE_PATHS = ["/v1/manifest", "/v1/pages?offset=0&length=4096", "/v1/status", "/metrics",
                "/v1/stream/urgent?session=s", "/v1/stream/background?session=s", "/v1/nothing"]
DEST_PATHS = ["/v1/status", "/metrics", "/v1/dashboard", "/v1/migrations/any/latencies",
              "/v1/nothing"]
REFUSED = {
    "missing": None,
    "empty": b"",
    "scheme-only": b"Bearer",
    "wrong": b"Bearer wrong",
    "longer": f"Bearer {TOKEN}x".encode(),
    "shorter": f"Bearer {TOKEN[:-1]}".encode(),
    "bare-token": TOKEN.encode(),
    "other-scheme": f"Basic {TOKEN}".encode(),
    "two-spaces": f"Bearer  {TOKEN}".encode(),
    "not-utf8": b"Bearer \xff\xfe" + TOKEN.encode(),
}


def _get(url: str, context, path: str, authorization: bytes | None):
    parts = urlsplit(url)
    conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=10, context=context)
    try:
        conn.putrequest("GET", path)
        if authorization is not None:
            conn.putheader("Authorization", authorization)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


@pytest.fixture(params=["source", "dest"])
def daemon(request):
    d = request.getfixturevalue(f"tls_{request.param}")
    return d, SOURCE_PATHS if request.param == "source" else DEST_PATHS


@pytest.mark.parametrize("header", list(REFUSED), ids=list(REFUSED))
def test_every_path_but_health_refuses_a_bad_token_with_the_same_401(daemon, trusting, header):
    d, paths = daemon
    for path in paths:
        status, headers, body = _get(d.url, trusting, path, REFUSED[header])
        assert (status, body) == (401, b"unauthorized\n"), path
        assert headers["WWW-Authenticate"] == "Bearer"


def test_health_needs_no_token_and_the_right_token_opens_the_rest(daemon, trusting):
    d, paths = daemon
    assert _get(d.url, trusting, "/healthz", None)[0] == 200
    for scheme in (b"Bearer", b"bearer"):  # the scheme is case-insensitive (RFC 9110)
        for path in ("/v1/status", "/metrics"):
            assert _get(d.url, trusting, path, scheme + b" " + TOKEN.encode())[0] == 200

"""Hypothesis strategies shared by the fuzz tests: JSON values a peer can send, HTTP requests of
every shape, and the contract any HTTP reply keeps."""

from __future__ import annotations

import json
from urllib.parse import quote

from hypothesis import strategies as st

from migrator.protocol import PAGE_SIZE
from migrator.protocol.handshake import UPGRADE_TOKEN

from .conftest import AUTH, TOKEN
from .rawhttp import Reply, request_bytes

U32, U64 = (1 << 32) - 1, (1 << 64) - 1
edge_ints = st.sampled_from([0, 1, -1, PAGE_SIZE, PAGE_SIZE - 1, U32, U32 + 1, U64, -(1 << 63),
                             1 << 62, 10 ** 9, 1 << 40])
floats = st.floats(allow_nan=True, allow_infinity=True)
# Anything JSON can carry (Python's json also reads NaN and Infinity, so a peer can send them).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | edge_ints | floats | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=6),
    max_leaves=30)
json_texts = (json_values.map(json.dumps)
              | st.text(max_size=200)
              | st.integers(1, 20000).map(lambda n: "[" * n + "]" * n)   # deep nesting
              | st.integers(1, 20000).map(lambda n: '{"a":' * n + "1" + "}" * n)
              | st.integers(4000, 6000).map(lambda n: "1" * n)           # a huge integer
              | st.sampled_from(["NaN", "Infinity", "-Infinity", '{"x": NaN}', "\ufeff{}"]))


methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
                           "CONNECT", "BREW"]) | st.from_regex(r"[A-Z]{1,12}", fullmatch=True)
odd_targets = st.sampled_from([
    "/v2/manifest", "/v0/pages", "/v9/status", "/v1/stream/sideways", "/v1/", "/v1", "/", "//",
    "/../../etc/passwd", "*", "http://127.0.0.1/v1/status", "/v1/pages/../manifest",
    "/%2e%2e/v1/status", "/v1/manifest?x=%zz", "/v10/manifest", "/V1/manifest", "/" + "a" * 9000,
    "/v1/migrations/../status", "/v1/migrations/%00/latencies", "/dashboard?token=x#y"])
header_names = st.sampled_from(["Content-Length", "Transfer-Encoding", "Connection", "Upgrade",
                                "Authorization", "Accept", "Host", "Expect", "Range",
                                "Content-Type", "Accept-Encoding"]) | st.from_regex(
    r"[A-Za-z-]{1,20}", fullmatch=True)
header_values = st.sampled_from([
    "0", "-1", "99999999999999999999", "chunked", "gzip, chunked", "Upgrade", "close",
    "keep-alive", UPGRADE_TOKEN, "websocket", f"Bearer {TOKEN}", "Bearer", "Basic Zm9vOmJhcg==",
    "100-continue", "bytes=0-4095", "application/msgpack", "application/openmetrics-text",
    "gzip", "x" * 9000]) | st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                   max_size=40)


def targets(known: list[str]):
    return st.one_of(
        st.sampled_from(known), odd_targets,
        st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), max_size=40).map(
            lambda t: "/" + quote(t, safe="/?&=%")))


def any_request(known: list[str]):
    """(method, the request's bytes): known or odd paths, any method, odd headers, a body."""
    return st.builds(
        lambda m, t, auth, hs, body: (m, request_bytes(m, t, (AUTH if auth else []) + hs, body)),
        methods, targets(known), st.booleans(),
        st.lists(st.tuples(header_names, header_values), max_size=4),
        st.binary(max_size=64) | st.just(b""))


def check_any_reply(method: str, reply: Reply | None) -> None:
    """The contract for any request: no 5xx; a refusal says what was wrong."""
    if reply is None:
        return  # closing the connection on garbage is allowed
    assert reply.status < 500, (reply.status, reply.text)
    if reply.status >= 400 and method != "HEAD":
        assert reply.text.strip(), f"a {reply.status} without a message"

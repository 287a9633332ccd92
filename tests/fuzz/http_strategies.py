"""Hypothesis strategies for HTTP requests of every shape, and the contract any reply keeps."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import strategies as st

from migrator.protocol.handshake import UPGRADE_TOKEN

from .conftest import AUTH, TOKEN
from .rawhttp import Reply, request_bytes

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

"""Fuzz a real destination daemon's HTTP server (status, metrics, dashboard): any request gets an
answer below 500 with a message, or a closed connection; afterwards the daemon is alive, still
answers correctly and its memory is bounded."""

from __future__ import annotations

import json
import time

from hypothesis import assume, given
from hypothesis import strategies as st

from .budget import fuzz
from .conftest import AUTH, RSS_GROWTH_LIMIT, assert_no_errors_of_ours
from .strategies import any_request, check_any_reply
from .rawhttp import connect, exchange, read_reply, request_bytes

_KNOWN = ["/healthz", "/metrics", "/v1/status", "/", "/dashboard", "/v1/dashboard",
          "/v1/migrations/nosuch/latencies"]
def _get(dest, target: str, headers=AUTH):
    return exchange(dest.port, request_bytes("GET", target, headers))


def _warm_rss(dest) -> int:
    """Every endpoint asked once, then the resident memory a burst of requests starts from."""
    for target in _KNOWN[:-1]:
        assert _get(dest, target).status == 200, target
    return dest.rss()


def _burst(dest, rounds: int = 40) -> int:
    """Requests good and bad, as the fuzz sends them; returns how many were answered."""
    answered = 0
    for i in range(rounds):
        for target in _KNOWN + [f"/v1/migrations/x{i}/latencies", f"/v1/nosuch/{i}"]:
            answered += _get(dest, target) is not None
        answered += _get(dest, "/v1/status", headers=[]) is not None
        answered += exchange(dest.port, b"\xff\xfe garbage\r\n\r\n") is not None
    return answered


@fuzz(300)
@given(any_request(_KNOWN))
def test_any_request_gets_an_answer_below_500_or_a_close(dest, request_):
    method, wire = request_
    check_any_reply(method, exchange(dest.port, wire, head=method == "HEAD"))


@fuzz(150)
@given(st.binary(min_size=1, max_size=512))
def test_garbage_instead_of_a_request_is_refused(dest, garbage):
    assume(garbage.strip(b"\r\n"))
    check_any_reply("GARBAGE", exchange(dest.port, garbage + b"\r\n\r\n"))


@fuzz(100)
@given(st.text(max_size=300))
def test_latencies_of_any_session_name_are_a_404_with_a_message(dest, session):
    from urllib.parse import quote
    reply = _get(dest, f"/v1/migrations/{quote(session, safe='')}/latencies")
    assert reply.status in (404, 400), reply
    assert reply.text.strip()


def test_unknown_paths_and_versions_are_404s_with_a_message(dest):
    for target in ("/v2/status", "/v0/dashboard", "/nope", "/v1/status/extra"):
        reply = _get(dest, target)
        assert reply.status == 404 and reply.text.strip(), (target, reply)


def test_wrong_methods_are_refused_with_405(dest):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        reply = exchange(dest.port, request_bytes(method, "/v1/status",
                                                  AUTH + [("Content-Length", "2")], b"{}"))
        assert reply.status == 405 and reply.text.strip(), (method, reply)


def test_oversized_bodies_are_refused_with_413(dest):
    with connect(dest.port) as s:
        s.sendall(request_bytes("GET", "/v1/status", AUTH + [("Content-Length", str(1 << 30))]))
        try:
            for _ in range(64):
                s.sendall(b"\0" * (64 << 10))
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = read_reply(s, timeout=15)
        assert reply is not None and reply.status == 413, reply


def test_oversized_bodies_do_not_grow_memory_or_block_others(dest):
    # Whatever the status, the body is never buffered and other clients are served meanwhile.
    before = dest.rss()
    socks = []
    try:
        for _ in range(16):
            s = connect(dest.port)
            s.sendall(request_bytes("GET", "/v1/status", AUTH + [("Content-Length", str(1 << 30))]))
            s.setblocking(False)
            socks.append(s)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            for s in socks:
                try:
                    s.send(b"\0" * (256 << 10))
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    pass
        began = time.monotonic()
        assert _get(dest, "/healthz").status == 200 and time.monotonic() - began < 2
        grown = dest.rss() - before
        assert grown < RSS_GROWTH_LIMIT, f"RSS grew by {grown >> 20} MiB"
    finally:
        for s in socks:
            s.close()


def test_oversized_heads_are_refused(dest):
    for wire in (request_bytes("GET", "/v1/status?" + "a" * 20000, AUTH),
                 request_bytes("GET", "/v1/status", AUTH + [("X-Big", "b" * 20000)]),
                 request_bytes("GET", "/v1/status", AUTH + [(f"X-{i}", "v") for i in range(500)])):
        reply = exchange(dest.port, wire)
        assert reply is None or (400 <= reply.status < 500 and reply.text.strip()), reply


def test_after_the_fuzz_the_dest_serves_and_its_memory_is_bounded(dest):
    assert dest.alive(), dest.log()
    reply = _get(dest, "/v1/status")
    assert reply.status == 200 and "pages_total" in json.loads(reply.body)
    # self-contained: its own baseline and burst, whatever ran before it
    before = _warm_rss(dest)
    assert _burst(dest) > 0
    grown = dest.rss() - before
    assert grown < RSS_GROWTH_LIMIT, f"RSS grew by {grown >> 20} MiB over a burst"
    assert_no_errors_of_ours(dest.log())

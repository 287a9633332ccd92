"""Fuzz a real source daemon over HTTP: malformed page ranges, requests, upgrades and frames.

Every bad request gets a 4xx with a message (or, on a page stream, an error reply or a closed
connection); afterwards the daemon is alive, serves a correct page and its memory is bounded.
"""

from __future__ import annotations

import fcntl
import re
import socket
import struct
import termios
import time
from urllib.parse import quote, urlencode

from hypothesis import assume, given
from hypothesis import strategies as st

from migrator.orchestration import wait_for
from migrator.protocol import PAGE_SIZE, frames
from migrator.protocol.frames import MAX_REQUEST_LENGTH, REPLY, PageRequest, ReplyHeader
from migrator.protocol.handshake import STREAMS, UPGRADE_TOKEN

from .budget import fuzz
from .conftest import AUTH, RSS_GROWTH_LIMIT, assert_no_errors_of_ours
from .strategies import any_request, check_any_reply
from .pagestream import assert_pages, read_frame_reply, upgraded
from .rawhttp import connect, exchange, read_reply, request_bytes

def _unread(s: socket.socket) -> int:
    """Bytes the peer sent that sit unread in our receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def _get(source, target: str, headers=AUTH, **kw):
    return exchange(source.port, request_bytes("GET", target, headers), **kw)


def _warm_rss(source) -> int:
    """Every endpoint asked once, then the resident memory a burst of requests starts from."""
    for target in ("/healthz", "/v1/status", "/metrics", "/v1/manifest",
                   f"/v1/pages?offset=0&length={PAGE_SIZE}"):
        assert _get(source, target).status == 200
    return source.rss()


def _burst(source, pages: int, rounds: int = 40) -> int:
    """Requests good and bad, as the fuzz sends them; returns how many were answered."""
    answered = 0
    for i in range(rounds):
        for target, headers in (
                (f"/v1/pages?offset={i * PAGE_SIZE}&length={4 * PAGE_SIZE}", AUTH),
                (f"/v1/pages?offset={pages * PAGE_SIZE}&length={PAGE_SIZE}", AUTH),
                (f"/v1/pages?offset=1&length=-{i}", AUTH),
                (f"/v1/pages?offset={i}&length={MAX_REQUEST_LENGTH * 2}", AUTH),
                (f"/v1/nosuch/{i}", AUTH), ("/v1/status", []), ("/v9/manifest", AUTH)):
            answered += _get(source, target, headers) is not None
    return answered


# -- /v1/pages?offset=&length= ---------------------------------------------------------------

def _param_values(pages: int):
    return st.one_of(
        st.integers(0, pages).map(lambda p: str(p * PAGE_SIZE)),       # in range, aligned
        st.integers(0, 16).map(lambda p: str(p * PAGE_SIZE)),          # small lengths
        st.integers(-(1 << 70), 1 << 70).map(str),                     # anything, mostly bad
        st.sampled_from([str(MAX_REQUEST_LENGTH), str(MAX_REQUEST_LENGTH + PAGE_SIZE),
                         str(pages * PAGE_SIZE), str((pages + 1) * PAGE_SIZE), "4095", "-4096",
                         "-0", "", " 4096", "4096 ", "+4096", "4_096", "0x1000", "1e3",
                         "\u0664\u0660\u0669\u0666", "nan", "9" * 5000, "00004096",
                         str(1 << 64), "4096\x00"]),
        st.text(max_size=24))


def _expected_int(raw: str | None) -> int | None:
    """What the source must accept: plain ASCII decimal digits, nothing else."""
    if raw is not None and re.fullmatch(r"[0-9]{1,20}", raw):
        return int(raw)
    return None


@fuzz(300)
@given(st.data())
def test_pages_query_params_are_validated(source, manifest, data):
    params = _param_values(manifest.pages)
    pairs = []
    offset = data.draw(st.none() | params, label="offset")
    length = data.draw(st.none() | params, label="length")
    if offset is not None:
        pairs.append(("offset", offset))
    if length is not None:
        pairs.append(("length", length))
    pairs += data.draw(st.lists(st.tuples(st.sampled_from(["offset", "length", "x", ""]), params),
                                max_size=2), label="extra")
    pairs = data.draw(st.permutations(pairs)) if data.draw(st.booleans()) else pairs
    target = "/v1/pages?" + urlencode(pairs, quote_via=quote)
    reply = _get(source, target)
    if len(target) > 8190:  # aiohttp's limit on a request line
        assert reply.status == 400 and "Got more than" in reply.text, reply
        return
    first = {}
    for k, v in pairs:
        first.setdefault(k, v)
    off, ln = _expected_int(first.get("offset")), _expected_int(first.get("length"))
    if off is None or ln is None:
        assert reply.status == 400, (pairs, reply)
        assert "query parameter" in reply.text, reply.text
        return
    problem = PageRequest(0, off, ln).check(manifest.size)
    if problem is None:
        assert reply.status == 200, (pairs, reply.status, reply.text)
        assert len(reply.body) == ln
        assert_pages(manifest, off, reply.body)
    else:
        assert reply.status == problem[0], (pairs, reply.status, reply.text)
        assert "range" in reply.text or "length" in reply.text, reply.text


# -- any request at all ------------------------------------------------------------------------

_KNOWN = ["/healthz", "/v1/manifest", "/v1/status", "/metrics", "/v1/pages",
          "/v1/stream/urgent", "/v1/stream/background"]


@fuzz(400)
@given(any_request(_KNOWN))
def test_any_request_gets_an_answer_below_500_or_a_close(source, request_):
    method, wire = request_
    check_any_reply(method, exchange(source.port, wire, head=method == "HEAD"))


@fuzz(200)
@given(st.binary(min_size=1, max_size=512))
def test_garbage_instead_of_a_request_is_refused(source, garbage):
    # (Blank lines before a request are allowed, HTTP says: the server waits for the request.
    # How long it waits is test_slow_clients' business.)
    assume(garbage.strip(b"\r\n"))
    reply = exchange(source.port, garbage + b"\r\n\r\n")
    check_any_reply("GARBAGE", reply)


def test_unknown_api_versions_are_refused_with_a_message(source):
    for target in ("/v2/manifest", "/v0/pages?offset=0&length=4096", "/v10/status"):
        reply = _get(source, target)
        assert reply.status == 404 and "v1" in reply.text, (target, reply.status, reply.text)


def test_wrong_methods_are_refused_with_405(source):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        reply = exchange(source.port, request_bytes(method, "/v1/pages?offset=0&length=4096",
                                                    AUTH))
        assert reply.status == 405 and reply.text.strip(), (method, reply)


def test_oversized_bodies_are_refused_with_413(source):
    # No endpoint of the source takes a body; one larger than the app's limit is refused, and
    # the connection is not held open while the client keeps sending.
    for target in ("/v1/status", "/v1/manifest", "/healthz", "/v1/pages?offset=0&length=4096"):
        with connect(source.port) as s:
            s.sendall(request_bytes("GET", target, AUTH + [("Content-Length", str(1 << 30))]))
            began = time.monotonic()
            try:
                for _ in range(64):  # 4 MiB of a promised 1 GiB
                    s.sendall(b"\0" * (64 << 10))
            except (BrokenPipeError, ConnectionResetError):
                pass
            reply = read_reply(s, timeout=15)
            assert reply is not None and reply.status == 413, (target, reply)
            assert "body" in reply.text, reply.text
            assert time.monotonic() - began < 15
    with connect(source.port) as s:  # chunked, never ending
        s.sendall(request_bytes("GET", "/v1/status", AUTH + [("Transfer-Encoding", "chunked")]))
        for _ in range(32):
            try:
                s.sendall(b"10000\r\n" + b"\0" * 0x10000 + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
        reply = read_reply(s, timeout=15)
        assert reply is not None and reply.status == 413, reply


def test_oversized_heads_are_refused(source):
    for wire in (request_bytes("GET", "/v1/status?" + "a" * 20000, AUTH),
                 request_bytes("GET", "/v1/status", AUTH + [("X-Big", "b" * 20000)]),
                 request_bytes("GET", "/v1/status", AUTH + [(f"X-{i}", "v") for i in range(500)])):
        reply = exchange(source.port, wire)
        assert reply is None or (400 <= reply.status < 500 and reply.text.strip()), reply


# -- upgrades ----------------------------------------------------------------------------------

@fuzz(300)
@given(method=st.sampled_from(["GET", "GET", "GET", "POST", "HEAD", "PUT"]),
       stream=st.sampled_from([*STREAMS, *STREAMS, "Urgent", "bulk", "", "urgent/x"]),
       session=st.none() | st.sampled_from(["", "m1", "x" * 256, "x" * 257])
       | st.text(max_size=40),
       connection=st.none() | st.sampled_from(["Upgrade", "upgrade", "keep-alive, Upgrade",
                                               "close", "Upgrade, close", "upgradeX"]),
       upgrade=st.none() | st.sampled_from([UPGRADE_TOKEN, "migrator-pages/2", "websocket",
                                            UPGRADE_TOKEN.upper(), "h2c", ""]),
       auth=st.sampled_from(["good", "missing", "wrong"]))
def test_upgrades_happen_only_when_everything_is_right(source, manifest, method, stream, session,
                                                       connection, upgrade, auth):
    target = f"/v1/stream/{quote(stream, safe='/')}"
    if session is not None:
        target += "?session=" + quote(session, safe="")
    headers = {"good": AUTH, "missing": [], "wrong": [("Authorization", "Bearer nope")]}[auth][:]
    if connection is not None:
        headers.append(("Connection", connection))
    if upgrade is not None:
        headers.append(("Upgrade", upgrade))
    valid = (method == "GET" and stream in STREAMS and auth == "good"
             and connection is not None and "upgrade" in [t.strip().lower()
                                                           for t in connection.split(",")]
             and upgrade == UPGRADE_TOKEN and session is not None and 1 <= len(session) <= 256)
    with connect(source.port) as s:
        s.sendall(request_bytes(method, target, headers, close=False))
        reply = read_reply(s, head=method == "HEAD")
        assert reply is not None
        if not valid:
            assert 400 <= reply.status < 500, (reply.status, reply.text)
            if method != "HEAD":
                assert reply.text.strip()
            return
        assert reply.status == 101, (reply.status, reply.text)
        s.sendall(PageRequest(9, 3 * PAGE_SIZE, PAGE_SIZE).encode())
        header, body = read_frame_reply(s, reply.body)
        assert (header.request_id, header.status, header.length) == (9, frames.OK, PAGE_SIZE)
        assert_pages(manifest, 3 * PAGE_SIZE, body)


def test_a_head_request_never_becomes_a_stream(source):
    wire = request_bytes("HEAD", "/v1/stream/urgent?session=head",
                         AUTH + [("Connection", "Upgrade"), ("Upgrade", UPGRADE_TOKEN)],
                         close=False)
    reply = exchange(source.port, wire, head=True)
    assert reply is not None and reply.status == 405, reply


def _read_all(s: socket.socket, pending: bytes, limit: int = 256 << 20) -> bytes:
    buf = bytearray(pending)
    while chunk := s.recv(1 << 20):
        buf += chunk
        assert len(buf) <= limit
    return bytes(buf)


def _check_replies(manifest, sent: list[PageRequest], wire: bytes) -> None:
    """Every whole request got its reply, in order: the page, or an error with a message."""
    at = 0
    for request in sent:
        header = ReplyHeader.decode(wire[at:at + REPLY.size])
        at += REPLY.size
        body = wire[at:at + header.length]
        at += header.length
        assert header.request_id == request.request_id and header.offset == request.offset
        problem = request.check(manifest.size)
        if problem is None:
            assert header.status == frames.OK and header.length == request.length
            assert_pages(manifest, request.offset, body)
        else:
            assert header.status == problem[0] and body.decode() == problem[1][:4096]
    assert at == len(wire), f"{len(wire) - at} bytes after the last reply"


_frames = st.builds(PageRequest, st.integers(0, (1 << 32) - 1),
                    st.integers(0, (1 << 64) - 1) | st.integers(0, 1 << 14).map(
                        lambda p: p * PAGE_SIZE),
                    st.integers(0, (1 << 32) - 1) | st.integers(0, 64).map(
                        lambda p: p * PAGE_SIZE) | st.sampled_from([MAX_REQUEST_LENGTH,
                                                                    0xFFFFF000, 64 << 20]))


@fuzz(150)
@given(st.lists(_frames, max_size=24), st.binary(max_size=15), st.sampled_from(STREAMS))
def test_frames_after_the_upgrade_get_a_reply_each(source, manifest, sent, tail, stream):
    s, pending = upgraded(source, stream)
    with s:
        s.sendall(b"".join(r.encode() for r in sent) + tail)  # then half a frame, maybe
        s.shutdown(socket.SHUT_WR)  # the source answers what is whole, then closes
        _check_replies(manifest, sent, _read_all(s, pending))


@fuzz(150)
@given(st.binary(max_size=2048), st.sampled_from(STREAMS))
def test_random_bytes_after_the_upgrade_are_answered_frame_by_frame(source, manifest, garbage,
                                                                    stream):
    whole = len(garbage) // frames.REQUEST.size
    sent = [PageRequest(*frames.REQUEST.unpack_from(garbage, i * frames.REQUEST.size))
            for i in range(whole)]
    if sum(r.length for r in sent if r.check(manifest.size) is None) > 256 << 20:
        return  # valid by chance and huge: not what this test is about
    s, pending = upgraded(source, stream)
    with s:
        s.sendall(garbage)
        s.shutdown(socket.SHUT_WR)
        _check_replies(manifest, sent, _read_all(s, pending))


def test_bytes_sent_before_the_101_are_not_frames_and_break_nothing(source, manifest):
    # Frames begin after the 101 (our client waits for it). aiohttp parses whatever arrives
    # behind the request head as HTTP, so early bytes are lost, but the stream still works.
    with connect(source.port) as s:
        s.sendall(request_bytes("GET", "/v1/stream/urgent?session=eager",
                                AUTH + [("Connection", "Upgrade"), ("Upgrade", UPGRADE_TOKEN)],
                                close=False) + PageRequest(1, 0, PAGE_SIZE).encode())
        reply = read_reply(s)
        assert reply.status == 101 and reply.body == b""
        s.sendall(PageRequest(2, PAGE_SIZE, PAGE_SIZE).encode())
        header, body = read_frame_reply(s)
        assert header.request_id == 2 and header.status == frames.OK
        assert_pages(manifest, PAGE_SIZE, body)


def test_readers_that_never_read_do_not_grow_memory(source):
    """Many clients ask for the whole image and never read: the source holds back, it does not
    buffer what they asked for."""
    before = source.rss()
    socks = []
    try:
        for i in range(24):
            s = connect(source.port)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(request_bytes("GET", f"/v1/pages?offset=0&length={64 << 20}", AUTH))
            socks.append(s)
        for i in range(24):
            s, _ = upgraded(source, STREAMS[i % 2], session=f"stuck{i}")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"".join(PageRequest(j, 0, 1 << 20).encode() for j in range(64)))
            socks.append(s)
        # until the source has answered every one and is held back by a full socket
        wait_for(lambda: all(_unread(s) for s in socks), 30, "replies to every reader")
        grown = source.rss() - before
        assert grown < RSS_GROWTH_LIMIT, f"RSS grew by {grown >> 20} MiB"
        began = time.monotonic()
        reply = _get(source, f"/v1/pages?offset={PAGE_SIZE}&length={PAGE_SIZE}")
        assert reply.status == 200 and time.monotonic() - began < 2
    finally:
        for s in socks:
            s.close()


def test_after_the_fuzz_the_source_serves_and_its_memory_is_bounded(source, manifest):
    assert source.alive(), source.log()
    reply = _get(source, f"/v1/pages?offset={5 * PAGE_SIZE}&length={2 * PAGE_SIZE}")
    assert reply.status == 200
    assert_pages(manifest, 5 * PAGE_SIZE, reply.body)
    s, pending = upgraded(source)
    with s:
        s.sendall(PageRequest(1, 7 * PAGE_SIZE, PAGE_SIZE).encode())
        header, body = read_frame_reply(s, pending)
        assert header.status == frames.OK
        assert_pages(manifest, 7 * PAGE_SIZE, body)
    # self-contained: its own baseline and burst, whatever ran before it
    before = _warm_rss(source)
    assert _burst(source, manifest.pages) > 0
    grown = source.rss() - before
    assert grown < RSS_GROWTH_LIMIT, f"RSS grew by {grown >> 20} MiB over a burst"
    assert_no_errors_of_ours(source.log())


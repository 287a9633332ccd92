"""The upgraded page streams: frames in order, errors that keep the stream going, and an
urgent stream that is answered while a 1 GiB background reply is still in flight."""

from __future__ import annotations

import mmap
import random
import socket
import threading
from urllib.parse import urlsplit

import pytest

from helpers.daemons import daemon_log
from migrator.client import (
    PageStream, StreamError, Unauthorized, fetch_manifest,
)
from migrator.protocol import PAGE_SIZE, frames
from migrator.protocol.digest import digests, page_digest
from migrator.protocol.frames import REPLY, PageRequest, ReplyHeader
from migrator.protocol.handshake import UPGRADE_TOKEN
from helpers.pages import fetch_into

MiB, GiB = 1 << 20, 1 << 30


def pages_of(manifest, offset: int, length: int):
    return manifest.digests[offset // PAGE_SIZE:(offset + length) // PAGE_SIZE]


@pytest.mark.parametrize("kind", ["urgent", "background"])
def test_pages_over_a_stream_match_the_manifest(source, expected, kind):
    rng = random.Random(kind)
    with PageStream(source.url, kind, source.token, session=f"match-{kind}") as stream:
        for _ in range(200):
            page = rng.randrange(expected.pages)
            buf = bytearray(PAGE_SIZE)
            fetch_into(stream, page * PAGE_SIZE, PAGE_SIZE, memoryview(buf))
            assert page_digest(buf) == expected.digests[page]
        whole = mmap.mmap(-1, 64 * MiB)
        fetch_into(stream, 0, 64 * MiB, memoryview(whole))
        assert digests(whole) == expected.digests


def test_pipelined_requests_are_answered_in_order(source, expected):
    rng = random.Random(3)
    requests = [(i, rng.randrange(16 * MiB // PAGE_SIZE) * PAGE_SIZE,
                 rng.choice([1, 2, 16, 64, 300, 1024]) * PAGE_SIZE) for i in range(100, 300)]
    with PageStream(source.url, "background", source.token, session="pipelined") as stream:
        for request_id, offset, length in requests:
            stream.send(request_id, offset, length)
        for request_id, offset, length in requests:
            header = stream.recv_header()
            assert (header.request_id, header.offset, header.length) == (request_id, offset, length)
            buf = bytearray(length)
            stream.recv_into(memoryview(buf))
            assert digests(buf) == pages_of(expected, offset, length)


@pytest.mark.parametrize("offset, length, status, words", [
    (100, PAGE_SIZE, frames.BAD_REQUEST, "aligned"),
    (0, 100, frames.BAD_REQUEST, "aligned"),
    (0, 0, frames.BAD_REQUEST, "non-empty"),
    (0, frames.MAX_REQUEST_LENGTH + PAGE_SIZE, frames.BAD_REQUEST, "limit"),
    (64 * MiB, PAGE_SIZE, frames.OUT_OF_RANGE, "outside the image"),
    (60 * MiB, 8 * MiB, frames.OUT_OF_RANGE, "outside the image"),
])
def test_bad_requests_get_an_error_reply_and_the_stream_goes_on(source, expected, offset, length,
                                                                status, words):
    with PageStream(source.url, "urgent", source.token, session="bad") as stream:
        stream.send(7, offset, length)
        stream.send(8, PAGE_SIZE, PAGE_SIZE)  # pipelined behind the bad one
        with pytest.raises(StreamError) as e:
            stream.recv_header()
        assert (e.value.status, e.value.request_id) == (status, 7)
        assert words in e.value.message
        header = stream.recv_header()
        assert header.request_id == 8
        buf = bytearray(PAGE_SIZE)
        stream.recv_into(memoryview(buf))
        assert page_digest(buf) == expected.digests[1]


def test_stream_without_the_token_is_refused(source):
    for token in (None, "wrong"):
        with pytest.raises(Unauthorized, match=r"/v1/stream/urgent.*401") as e:
            PageStream(source.url, "urgent", token, session="nope")
        assert isinstance(e.value, ConnectionError)


def raw_upgrade(source, path: str, upgrade: bool = True) -> tuple[socket.socket, bytes]:
    url = urlsplit(source.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    lines = [f"GET {path} HTTP/1.1", f"Host: {url.netloc}", f"Authorization: Bearer {source.token}"]
    if upgrade:
        lines += ["Connection: Upgrade", f"Upgrade: {UPGRADE_TOKEN}"]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    return sock, head


@pytest.mark.parametrize("path, upgrade, status, words", [
    ("/v1/stream/sideways?session=s", True, 404, "urgent, background"),
    ("/v1/stream/urgent", True, 400, "session"),
    ("/v1/stream/urgent?session=s", False, 426, "Upgrade: migrator-pages/1"),
])
def test_malformed_upgrades_get_4xx_with_a_message(source, path, upgrade, status, words):
    sock, head = raw_upgrade(source, path, upgrade)
    with sock:
        assert head.startswith(f"HTTP/1.1 {status} ".encode())
        body = head.split(b"\r\n\r\n", 1)[1]
        while words.encode() not in body:
            chunk = sock.recv(4096)
            assert chunk, body
            body += chunk


def test_requests_sent_before_a_half_close_are_all_answered(source, expected):
    sock, head = raw_upgrade(source, "/v1/stream/urgent?session=half-close")
    with sock:
        assert head.startswith(b"HTTP/1.1 101 ")
        sock.sendall(b"".join(PageRequest(i, i * PAGE_SIZE, PAGE_SIZE).encode() for i in range(5)))
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    size = REPLY.size + PAGE_SIZE
    assert len(data) == 5 * size
    for i in range(5):
        header = ReplyHeader.decode(data[i * size:i * size + REPLY.size])
        assert (header.request_id, header.status) == (i, frames.OK)
        assert page_digest(data[i * size + REPLY.size:(i + 1) * size]) == expected.digests[i]


def test_garbage_instead_of_frames_does_not_take_the_source_down(source):
    sock, head = raw_upgrade(source, "/v1/stream/urgent?session=garbage")
    with sock:
        sock.sendall(b"\xff" * 16 * 3)  # three requests for an offset far beyond the image
        for _ in range(3):
            header = bytearray(REPLY.size)
            view, got = memoryview(header), 0
            while got < REPLY.size:
                got += sock.recv_into(view[got:])
            reply = ReplyHeader.decode(header)
            assert reply.status == frames.BAD_REQUEST
            sock.recv(reply.length, socket.MSG_WAITALL)
    assert fetch_manifest(source.url, source.token).pages == 64 * MiB // PAGE_SIZE


def test_several_sessions_stream_at_once(source, expected):
    streams = [PageStream(source.url, kind, source.token, session=f"vm-{n}")
               for n in range(3) for kind in ("urgent", "background")]
    try:
        for i, stream in enumerate(streams):
            stream.send(i, i * PAGE_SIZE, PAGE_SIZE)
        for i, stream in enumerate(reversed(streams)):
            i = len(streams) - 1 - i
            assert stream.recv_header().request_id == i
            buf = bytearray(PAGE_SIZE)
            stream.recv_into(memoryview(buf))
            assert page_digest(buf) == expected.digests[i]
    finally:
        for stream in streams:
            stream.close()


def test_unknown_stream_name_is_refused_by_the_client(source):
    with pytest.raises(ValueError, match="urgent, background"):
        PageStream(source.url, "sideways", source.token, session="s")


def test_an_unreachable_source_is_a_connection_error_naming_the_url():
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"http://127.0.0.1:{port}/v1/stream/urgent"):
        PageStream(f"http://127.0.0.1:{port}", "urgent", None, session="s", timeout=2)


def _rss_peak(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmHWM:"))


def test_urgent_pages_are_served_during_a_1gib_background_reply(start):
    src = start("1GiB", seed=11, token="t")
    manifest = fetch_manifest(src.url, "t")
    peak_before = _rss_peak(src.proc.pid)
    background = PageStream(src.url, "background", "t", session="big", timeout=60)
    urgent = PageStream(src.url, "urgent", "t", session="big")
    target = mmap.mmap(-1, GiB)
    received = [0]
    started, urgent_done = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def pull() -> None:
        # Read the 1 GiB reply slowly until the urgent fetches are done, so that they surely
        # happen while it is in flight (and the source must hold back, not buffer, the rest).
        try:
            background.send(1, 0, GiB)
            assert background.recv_header().length == GiB
            view = memoryview(target)
            while received[0] < GiB:
                n = min(4 * MiB, GiB - received[0])
                background.recv_into(view[received[0]:received[0] + n])
                received[0] += n
                started.set()
                if not urgent_done.is_set():
                    urgent_done.wait(0.005)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            failure.append(e)
            started.set()

    thread = threading.Thread(target=pull)
    thread.start()
    try:
        assert started.wait(30) and not failure
        rng = random.Random(5)
        buf = bytearray(PAGE_SIZE)
        for _ in range(300):
            page = rng.randrange(manifest.pages)
            fetch_into(urgent, page * PAGE_SIZE, PAGE_SIZE, memoryview(buf))
            assert page_digest(buf) == manifest.digests[page]
        in_flight_at_end = received[0] < GiB
    finally:
        urgent_done.set()
        thread.join(60)
    assert not failure, failure
    assert in_flight_at_end, "urgent fetches were not answered before the background reply ended"
    assert digests(target) == manifest.digests
    # Flow control: the source sent the reply from the image, not from a 1 GiB copy of it.
    assert _rss_peak(src.proc.pid) - peak_before < 128 * MiB
    urgent.close()
    background.close()
    assert "Traceback" not in daemon_log(src.proc)

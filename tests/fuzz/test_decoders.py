"""Property tests over the wire protocol's pure decoders: whatever bytes or values arrive, each
decoder returns something valid or raises ProtocolError (or, for sockets, ConnectionError),
never another exception and never an allocation out of proportion to its input."""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import tracemalloc
from array import array
from urllib.parse import parse_qs

import msgpack
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from migrator import unixmessages
from migrator.protocol import PAGE_SIZE, frames
from migrator.protocol.errors import ProtocolError
from migrator.protocol.frames import (
    MAX_REQUEST_LENGTH, REQUEST, PageRequest, ReplyHeader, RequestDecoder, error_reply,
)
from migrator.protocol.guest import MAX_MESSAGE_BYTES, check_regions, expect
from migrator.protocol.handshake import (
    STREAMS, check_upgrade_response, stream_path, upgrade_request,
)
from migrator.protocol.manifest import DATA, POISON, ZERO, Manifest, Region

from .budget import fuzz
from .strategies import U32, U64, edge_ints, floats, json_texts, json_values

# -- values a peer can send --------------------------------------------------------------------

_scalars = (st.none() | st.booleans() | st.integers(-(1 << 63), U64) | edge_ints | floats
            | st.text(max_size=40) | st.binary(max_size=64))
# Anything msgpack can carry, nested a little.
msgpack_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=6),
    max_leaves=30)


@st.composite
def manifests(draw) -> Manifest:
    """A valid, small manifest."""
    sizes = draw(st.lists(st.integers(1, 8), min_size=1, max_size=4))
    regions, offset = [], 0
    for i, pages in enumerate(sizes):
        regions.append(Region(draw(st.text(max_size=12)) or f"r{i}", offset, pages * PAGE_SIZE))
        offset += pages * PAGE_SIZE
    pages = offset // PAGE_SIZE
    digests = array("Q", draw(st.lists(st.integers(0, U64), min_size=pages, max_size=pages)))
    kinds = bytes(draw(st.lists(st.sampled_from([DATA, ZERO, POISON]), min_size=pages,
                                max_size=pages)))
    return Manifest(draw(st.text(max_size=20)), regions, digests, kinds)


@st.composite
def manifest_like_maps(draw) -> dict:
    """A map shaped like an encoded manifest, each field plausible or anything at all."""
    m = draw(manifests())
    good = msgpack.unpackb(m.encode(), raw=False)
    region_fields = st.fixed_dictionaries(
        {}, optional={k: msgpack_values | st.integers() for k in ("name", "offset", "size")})
    out = {}
    for key, value in good.items():
        choice = draw(st.sampled_from(["keep", "keep", "any", "drop", "region"]))
        if choice == "keep":
            out[key] = value
        elif choice == "any":
            out[key] = draw(msgpack_values)
        elif choice == "region":
            out[key] = draw(st.lists(region_fields | msgpack_values, max_size=4))
    out.update(draw(st.dictionaries(st.text(max_size=8), msgpack_values, max_size=2)))
    return out


def _packs(value) -> bytes:
    try:
        return msgpack.packb(value)
    except (OverflowError, ValueError, TypeError):
        assume(False)
        raise


def _bounded(fn, *args, limit: int):
    """fn(*args), failing the test if it allocated more than limit bytes at its peak.

    tracemalloc sees every thread's allocations, and the interpreter's own now and then, so an
    over-limit peak must repeat to count: a decoder's allocations are deterministic."""
    peaks = []
    for _ in range(3):
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            try:
                result = fn(*args)
            except BaseException as e:
                result = e
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        peaks.append(peak)
        if peak <= limit:
            break
    assert min(peaks) <= limit, f"{fn.__qualname__} allocated {min(peaks)} bytes, {limit} allowed"
    if isinstance(result, BaseException):
        raise result
    return result


def _assert_valid_manifest(m: Manifest) -> None:
    assert isinstance(m, Manifest)
    assert m.version == 1 and m.page_size == PAGE_SIZE
    assert isinstance(m.image_id, str)
    offset = 0
    for r in m.regions:
        assert isinstance(r.name, str) and type(r.offset) is int and type(r.size) is int
        assert r.offset == offset and r.size > 0 and r.size % PAGE_SIZE == 0
        offset += r.size
    assert m.size == offset and len(m.digests) == m.pages and len(m.kinds) == m.pages
    assert isinstance(m.kinds, bytes) and set(m.kinds) <= {DATA, ZERO, POISON}


def _decode_manifest(data: bytes) -> None:
    # Peak memory: the unpacked object, the digest array and the Manifest, each about the size
    # of the input (small msgpack objects expand ~60x into Python objects), plus a little.
    try:
        m = _bounded(Manifest.decode, data, limit=(1 << 20) + 128 * len(data))
    except ProtocolError as e:
        assert str(e)
        return
    _assert_valid_manifest(m)


# -- Manifest.decode ------------------------------------------------------------------------------

@fuzz(300)
@given(manifests())
def test_manifest_round_trips(m):
    decoded = Manifest.decode(m.encode())
    _assert_valid_manifest(decoded)
    assert decoded.encode() == m.encode()


@fuzz(500)
@given(st.binary(max_size=4096))
def test_manifest_decode_of_arbitrary_bytes_is_a_manifest_or_a_protocol_error(data):
    _decode_manifest(data)


@fuzz(500)
@given(msgpack_values)
def test_manifest_decode_of_arbitrary_msgpack_is_a_manifest_or_a_protocol_error(value):
    _decode_manifest(_packs(value))


@fuzz(500)
@given(manifest_like_maps())
def test_manifest_decode_of_manifest_shaped_maps_is_a_manifest_or_a_protocol_error(value):
    _decode_manifest(_packs(value))


@fuzz(300)
@given(manifests(), st.data())
def test_manifest_decode_of_corrupted_encodings_is_a_manifest_or_a_protocol_error(m, data):
    raw = bytearray(m.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if action == "flip":
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del raw[at:]
        elif action == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=9))
        else:
            del raw[at]
        if not raw:
            break
    _decode_manifest(bytes(raw))


@pytest.mark.parametrize("kinds", [10 ** 9, 1 << 62, U64, -1, [300], "abc", 1.5])
def test_manifest_kinds_that_are_not_bytes_are_refused_without_allocating(kinds):
    # bytes(10**9) would allocate a gigabyte for a 9-byte field.
    good = msgpack.unpackb(Manifest("i", [Region("r", 0, PAGE_SIZE)], array("Q", [0]),
                                    bytes([DATA])).encode())
    good["kinds"] = kinds
    with pytest.raises(ProtocolError):
        _bounded(Manifest.decode, msgpack.packb(good), limit=1 << 20)


@pytest.mark.parametrize("field,value", [("version", float("inf")), ("page_size", float("nan")),
                                         ("version", True), ("page_size", "4096")])
def test_manifest_numbers_must_be_integers(field, value):
    good = msgpack.unpackb(Manifest("i", [Region("r", 0, PAGE_SIZE)], array("Q", [0]),
                                    bytes([DATA])).encode())
    good[field] = value
    with pytest.raises(ProtocolError):
        Manifest.decode(msgpack.packb(good))


def test_manifest_unknown_page_kinds_are_refused():
    good = msgpack.unpackb(Manifest("i", [Region("r", 0, PAGE_SIZE)], array("Q", [0]),
                                    bytes([DATA])).encode())
    good["kinds"] = bytes([7])
    with pytest.raises(ProtocolError, match="kind"):
        Manifest.decode(msgpack.packb(good))


# -- frames --------------------------------------------------------------------------------------

requests = st.builds(PageRequest, st.integers(0, U32), st.integers(0, U64), st.integers(0, U32))


@fuzz(500)
@given(st.lists(requests, max_size=40), st.data())
def test_request_decoder_reproduces_requests_under_any_chunking(sent, data):
    wire = b"".join(r.encode() for r in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    decoder, got = RequestDecoder(), []
    for lo, hi in zip([0, *cuts], [*cuts, len(wire)]):
        got += decoder.feed(wire[lo:hi])
        assert decoder.pending == len(wire[:hi]) - REQUEST.size * len(got) < REQUEST.size
    assert got == sent and decoder.pending == 0


@fuzz(500)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_request_decoder_of_arbitrary_bytes_yields_whole_frames_only(chunks):
    decoder, got = RequestDecoder(), []
    for c in chunks:
        got += decoder.feed(c)
    wire = b"".join(chunks)
    assert len(got) == len(wire) // REQUEST.size and decoder.pending == len(wire) % REQUEST.size
    assert got == [PageRequest(*REQUEST.unpack_from(wire, i * REQUEST.size))
                   for i in range(len(got))]


image_sizes = st.integers(0, 1 << 28).map(lambda p: p * PAGE_SIZE)
offsets = st.integers(0, U64) | st.integers(0, 1 << 20).map(lambda p: p * PAGE_SIZE)
lengths = (st.integers(0, U32) | st.integers(0, 1 << 18).map(lambda p: p * PAGE_SIZE)
           | st.sampled_from([MAX_REQUEST_LENGTH, MAX_REQUEST_LENGTH + PAGE_SIZE]))


@fuzz(1000)
@given(offsets, lengths, image_sizes)
def test_page_request_check_classifies_every_range(offset, length, size):
    problem = PageRequest(7, offset, length).check(size)
    aligned = length > 0 and offset % PAGE_SIZE == 0 and length % PAGE_SIZE == 0
    if not aligned or length > MAX_REQUEST_LENGTH:
        assert problem is not None and problem[0] == frames.BAD_REQUEST
    elif offset + length > size:
        assert problem is not None and problem[0] == frames.OUT_OF_RANGE
    else:
        assert problem is None  # servable: aligned, non-empty, within the limit and the image
        assert 0 <= offset < offset + length <= size
    if problem is not None:
        assert isinstance(problem[1], str) and problem[1]


@fuzz(300)
@given(requests, st.sampled_from([frames.BAD_REQUEST, frames.OUT_OF_RANGE]),
       st.text(max_size=5000))
def test_error_replies_decode_and_carry_a_utf8_message(request_, status, message):
    wire = error_reply(request_, status, message)
    header = ReplyHeader.decode(wire[:frames.REPLY.size])
    body = wire[frames.REPLY.size:]
    assert (header.request_id, header.status, header.offset) == (
        request_.request_id, status, request_.offset)
    assert header.length == len(body) <= 4096
    assert message.startswith(body.decode("utf-8"))  # cut at a character, never inside one


@fuzz(300)
@given(st.integers(0, U32), st.integers(0, 0xFFFF), st.integers(0, U64), st.integers(0, U32))
def test_reply_header_round_trips(request_id, status, offset, length):
    h = ReplyHeader(request_id, status, offset, length)
    assert ReplyHeader.decode(h.encode()) == h


@fuzz(300)
@given(st.binary(max_size=64))
def test_reply_header_decode_of_arbitrary_bytes_is_a_header_or_a_protocol_error(data):
    try:
        h = ReplyHeader.decode(data)
    except ProtocolError:
        assert len(data) != frames.REPLY.size
        return
    assert len(data) == frames.REPLY.size and h.encode()[:4] == data[:4]


# -- the upgrade handshake -----------------------------------------------------------------------

@fuzz(500)
@given(st.binary(max_size=300) | st.builds(
    lambda code, reason, body: f"HTTP/1.1 {code} {reason}\r\nX: y\r\n\r\n".encode() + body,
    st.sampled_from(["101", "200", "401", "426", "", "1O1"]) | st.text(max_size=5),
    st.text(max_size=20), st.binary(max_size=40)))
def test_check_upgrade_response_is_a_101_or_a_protocol_error(head):
    try:
        check_upgrade_response(head)
    except ProtocolError as e:
        assert str(e)
        return
    assert head.split(b"\r\n", 1)[0].split(b" ")[1] == b"101"


@fuzz(300)
@given(st.sampled_from(STREAMS), st.text(), st.none() | st.text(
    st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40))
def test_upgrade_requests_carry_any_session_without_breaking_the_request_line(stream, session,
                                                                             token):
    head = upgrade_request("127.0.0.1:1", stream, token, session)
    request_line, *headers = head.decode().split("\r\n")
    method, target, version = request_line.split(" ")
    assert (method, version) == ("GET", "HTTP/1.1")
    path, _, query = target.partition("?")
    assert path == stream_path(stream)
    assert parse_qs(query, keep_blank_values=True) == {"session": [session]}
    assert headers[-2:] == ["", ""] and all(":" in h for h in headers[:-2])


def test_unknown_streams_are_a_protocol_error():
    with pytest.raises(ProtocolError, match="unknown stream"):
        stream_path("sideways")


# -- the guest socket: unixmessages and the messages on it -------------------------------------------

def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _recv_all(wire: bytes, fds_per_message: int = 0, send_fds: int = 0) -> list:
    """Send wire (with send_fds fds of /dev/null on its first byte) over a socketpair and
    receive messages until recv raises; returns what was received, asserting only ProtocolError
    or ConnectionError ever end it."""
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    null = [os.open(os.devnull, os.O_RDONLY) for _ in range(send_fds)]

    def writer() -> None:
        try:
            if null and wire:
                socket.send_fds(a, [wire[:1]], null)
                a.sendall(wire[1:])
            else:
                a.sendall(wire)
            a.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the reader gave up first

    t = threading.Thread(target=writer)
    t.start()
    received = []
    try:
        while True:
            try:
                message, fds = unixmessages.recv(b, expect_fds=fds_per_message)
            except (ProtocolError, ConnectionError) as e:
                assert not isinstance(e, TimeoutError), "recv hung on a finite stream"
                break
            for fd in fds:
                os.close(fd)
            assert len(fds) <= unixmessages.MAX_FDS
            assert isinstance(message, (dict, list, str, int, float, bool, type(None)))
            received.append(message)
    finally:
        b.close()
        t.join()
        a.close()
        for fd in null:
            os.close(fd)
    return received


def _framed(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


@fuzz(300)
@given(st.binary(max_size=2048), st.sampled_from([0, 2]), st.integers(0, 10))
def test_unixmessages_recv_of_arbitrary_bytes_raises_only_protocol_or_connection_errors(
        wire, expect_fds, send_fds):
    before = _open_fds()
    _recv_all(wire, expect_fds, send_fds)
    assert _open_fds() == before  # no fd leaks, whatever arrived


@fuzz(300)
@given(st.lists(json_texts.map(lambda t: t.encode("utf-8", "surrogatepass")) | st.binary(),
                min_size=1, max_size=4))
def test_unixmessages_recv_of_framed_bodies_is_json_or_a_protocol_error(bodies):
    wire = b"".join(_framed(b) for b in bodies)
    received = _recv_all(wire)
    assert len(received) <= len(bodies)
    for m in received:  # what got through is finite JSON, as sent
        json.dumps(m, allow_nan=False)


def test_unixmessages_refuses_huge_lengths_before_reading_the_body():
    got = _recv_all(struct.pack("<I", MAX_MESSAGE_BYTES + 1) + b"{}")
    assert got == []


@fuzz(500)
@given(json_values, st.sampled_from(["hello", "memory", "ready", "error", "layout"]))
def test_expect_of_any_json_value_is_the_message_or_a_protocol_error(value, kind):
    try:
        got = expect(value, kind)
    except ProtocolError as e:
        assert str(e)
        return
    assert got is value and got["type"] == kind


region_values = st.fixed_dictionaries({}, optional={
    "base_host_virt_addr": json_values | st.integers(0, 1 << 48).map(lambda p: p * PAGE_SIZE),
    "size": json_values | st.integers(1, 64).map(lambda p: p * PAGE_SIZE),
    "offset": json_values | st.integers(0, 64).map(lambda p: p * PAGE_SIZE),
    "page_size": json_values | st.just(PAGE_SIZE),
})


@fuzz(500)
@given(json_values | st.lists(region_values | json_values, max_size=5),
       st.integers(1, 64).map(lambda p: p * PAGE_SIZE), st.sampled_from([PAGE_SIZE, 2 << 20]))
def test_check_regions_of_any_json_value_is_valid_regions_or_a_protocol_error(regions, size,
                                                                             page_size):
    try:
        got = check_regions(regions, size, page_size)
    except ProtocolError as e:
        assert str(e)
        return
    offset = 0
    for r in got:
        base, rsize = r["base_host_virt_addr"], r["size"]
        assert all(type(r[k]) is int for k in ("base_host_virt_addr", "size", "offset",
                                                  "page_size"))
        assert r["offset"] == offset and rsize > 0 and r["page_size"] == page_size
        assert base % page_size == 0 and rsize % page_size == 0
        assert 0 <= base and base + rsize <= 1 << 64
        offset += rsize
    assert offset == size


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), 4096.5, "4096", True, -4096,
                                 1 << 70])
def test_check_regions_wants_integer_addresses_in_range(bad):
    region = {"base_host_virt_addr": bad, "size": PAGE_SIZE, "offset": 0, "page_size": PAGE_SIZE}
    with pytest.raises(ProtocolError):
        check_regions([region], PAGE_SIZE, PAGE_SIZE)

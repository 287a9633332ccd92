"""Fuzz a real destination's guest socket: whatever a client sends (any JSON, bytes that are
not JSON, lengths that lie), it gets a layout or an error with a message, or the socket is
closed; the destination keeps serving real guests."""

from __future__ import annotations

import json
import os
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrator import unixmessages
from migrator.protocol.errors import ProtocolError

from e2e.conftest import run_guest

from .budget import fuzz
from .strategies import json_texts, json_values

_hello = {"type": "hello", "version": 1, "vcpus": 1, "pid": os.getpid()}
_bodies = st.one_of(
    st.just(json.dumps(_hello)),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"type": st.sampled_from(["hello", "memory", "vcpus", "stalls",
                                                     "digests", "verify", "bye", "nope"])},
                          optional={k: json_values for k in ("version", "regions", "pages",
                                                              "thread_ids", "samples_ns",
                                                              "vcpus")}).map(json.dumps),
    json_texts).map(lambda t: t.encode("utf-8", "surrogatepass"))
_frames = st.one_of(
    _bodies.map(lambda b: struct.pack("<I", len(b)) + b),
    st.binary(max_size=64),  # anything, lengths included
    st.tuples(st.integers(0, (1 << 32) - 1), st.binary(max_size=32)).map(
        lambda t: struct.pack("<I", t[0]) + t[1]))  # a length that lies


@fuzz(150)
@given(st.lists(_frames, min_size=1, max_size=4))
def test_guest_socket_answers_a_layout_or_an_error_or_closes(dest, frames):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(dest.socket)
        try:
            s.sendall(b"".join(frames))
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # it refused and closed before reading everything
        while True:
            try:
                message, _ = unixmessages.recv(s)
            except (ConnectionError, ProtocolError):
                break
            assert isinstance(message, dict) and message.get("type") in ("layout", "error"), message
            if message["type"] == "error":
                assert message.get("message"), message


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"type": NaN}', b"1" * 5000,
                                  b"\xff\xfe{}", b'{"type": "hello", "version": Infinity}'],
                         ids=["deep", "nan", "huge-int", "not-utf8", "infinity"])
def test_a_first_message_that_is_not_json_is_refused_with_a_message(dest, body):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(dest.socket)
        s.sendall(struct.pack("<I", len(body)) + body)
        message, _ = unixmessages.recv(s)
        assert message["type"] == "error" and message["message"], message


@pytest.mark.parametrize("value", ["1e400", "4096.5", "-4096", "\"4096\"", "true",
                                   str(1 << 70), "null"])
def test_regions_with_addresses_that_are_not_integers_are_refused_with_a_message(dest, value):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(dest.socket)
        unixmessages.send(s, _hello)
        layout, _ = unixmessages.recv(s)
        region = (f'{{"base_host_virt_addr": {value}, "size": {layout["size"]}, "offset": 0, '
                  f'"page_size": {layout["memory_page_size"]}}}')
        body = f'{{"type": "memory", "regions": [{region}]}}'.encode()
        fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(2)]
        try:
            wire = struct.pack("<I", len(body)) + body
            socket.send_fds(s, [wire[:1]], fds)
            s.sendall(wire[1:])
        finally:
            for fd in fds:
                os.close(fd)
        message, _ = unixmessages.recv(s)
        assert message["type"] == "error", message
        assert "integers" in message["message"] or "address space" in message["message"]


def test_after_the_fuzz_real_guests_still_migrate(dest):
    assert dest.alive(), dest.log()
    report = run_guest(dest, "--vcpus", "2", "--accesses", "500")
    assert report["migration"]["phase"] == "complete"
    assert report["verify"]["mismatched_pages"] == 0 and report["verify"]["writes_lost"] == 0

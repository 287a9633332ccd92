"""Frames on an upgraded page stream: requests and reply headers, pure bytes."""

import pytest

from migrator.protocol import PAGE_SIZE, frames
from migrator.protocol.errors import ProtocolError
from migrator.protocol.frames import (
    MAX_REQUEST_LENGTH, REPLY, REQUEST, PageRequest, ReplyHeader, RequestDecoder, error_reply,
)

IMAGE = 64 * PAGE_SIZE


def test_a_request_is_16_bytes_and_a_reply_header_20():
    assert (REQUEST.size, REPLY.size) == (16, 20)
    assert len(PageRequest(1, 0, PAGE_SIZE).encode()) == 16


def test_requests_split_anywhere_decode_whole_and_in_order():
    wire = b"".join(PageRequest(i, i * PAGE_SIZE, PAGE_SIZE).encode() for i in range(5))
    decoder, got = RequestDecoder(), []
    for cut in range(0, len(wire), 7):  # 7-byte pieces: every request arrives split
        got += decoder.feed(wire[cut:cut + 7])
    assert [r.request_id for r in got] == list(range(5)) and decoder.pending == 0


def test_an_aligned_request_within_the_image_is_servable():
    assert PageRequest(1, 8 * PAGE_SIZE, 2 * PAGE_SIZE).check(IMAGE) is None


@pytest.mark.parametrize("offset, length, status", [
    (1, PAGE_SIZE, frames.BAD_REQUEST),                      # unaligned offset
    (0, 100, frames.BAD_REQUEST),                            # unaligned length
    (0, 0, frames.BAD_REQUEST),                              # empty
    (0, MAX_REQUEST_LENGTH + PAGE_SIZE, frames.BAD_REQUEST),  # over the limit
    (IMAGE - PAGE_SIZE, 2 * PAGE_SIZE, frames.OUT_OF_RANGE),  # runs past the end
])
def test_a_request_that_cannot_be_served_says_why_with_its_status(offset, length, status):
    got, message = PageRequest(1, offset, length).check(IMAGE)
    assert got == status and message


def test_an_error_reply_carries_its_request_and_a_utf8_message_cut_at_4_kib():
    wire = error_reply(PageRequest(9, PAGE_SIZE, PAGE_SIZE), frames.OUT_OF_RANGE, "é" * 3000)
    header = ReplyHeader.decode(wire[:REPLY.size])
    assert (header.request_id, header.status, header.offset) == (9, frames.OUT_OF_RANGE, PAGE_SIZE)
    body = wire[REPLY.size:]
    assert len(body) == header.length <= 4096 and body.decode("utf-8") == "é" * (len(body) // 2)


def test_an_error_reply_with_status_ok_is_refused():
    with pytest.raises(ProtocolError):
        error_reply(PageRequest(1, 0, PAGE_SIZE), frames.OK, "fine")


def test_a_reply_header_of_the_wrong_size_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="20 bytes"):
        ReplyHeader.decode(b"\0" * 19)

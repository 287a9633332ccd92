"""The stream upgrade's head, the guest socket's messages and the poison page lists: checks on
plain values, no sockets."""

import pytest

from migrator.protocol import PAGE_SIZE
from migrator.protocol.errors import ProtocolError
from migrator.protocol.guest import check_regions, expect
from migrator.protocol.handshake import (
    UPGRADE_TOKEN, check_upgrade_response, stream_path, upgrade_request,
)
from migrator.protocol.poison import parse_pages, sample_pages

HUGE = 2 << 20


def test_the_upgrade_request_names_stream_session_token_and_prefix():
    head = upgrade_request("src:8470", "urgent", "t0k", "a b", path_prefix="/mig/").decode()
    assert head.startswith("GET /mig/v1/stream/urgent?session=a%20b HTTP/1.1\r\n")
    assert f"Upgrade: {UPGRADE_TOKEN}" in head and "Authorization: Bearer t0k" in head
    assert head.endswith("\r\n\r\n")


def test_an_unknown_stream_is_refused():
    with pytest.raises(ProtocolError, match="unknown stream"):
        stream_path("sideways")


def test_only_a_101_accepts_the_upgrade_and_a_refusal_carries_its_reason():
    check_upgrade_response(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    with pytest.raises(ProtocolError, match="HTTP 401 Unauthorized bad token"):
        check_upgrade_response(b"HTTP/1.1 401 Unauthorized\r\n\r\nbad token")


def test_expect_names_what_arrived_instead_and_relays_a_peer_error():
    assert expect({"type": "hello", "version": 1}, "hello")["version"] == 1
    with pytest.raises(ProtocolError, match="expected message type 'ready', got 'layout'"):
        expect({"type": "layout"}, "ready")
    with pytest.raises(ProtocolError, match="peer reported an error: no memory"):
        expect({"type": "error", "message": "no memory"}, "ready")
    with pytest.raises(ProtocolError, match="got list"):
        expect([], "hello")


def _region(base: int, size: int, offset: int, page_size: int = HUGE) -> dict:
    return {"base_host_virt_addr": base, "size": size, "offset": offset, "page_size": page_size}


def test_regions_that_tile_the_layout_are_accepted():
    regions = [_region(1 << 30, HUGE, 0), _region((1 << 30) + HUGE, 3 * HUGE, HUGE)]
    assert check_regions(regions, 4 * HUGE, HUGE) == regions


@pytest.mark.parametrize("regions, words", [
    ([], "non-empty list"),
    ([_region(1 << 30, HUGE, 0, PAGE_SIZE)], "does not match the layout"),
    ([_region((1 << 30) + PAGE_SIZE, HUGE, 0)], "not contiguous"),
    ([_region(1 << 30, HUGE, 0)], "cover 2097152 bytes but the layout is 4194304"),
    ([{**_region(1 << 30, HUGE, 0), "size": float(HUGE)}], "as integers"),
])
def test_regions_that_do_not_fit_the_layout_are_refused_with_the_reason(regions, words):
    with pytest.raises(ProtocolError, match=words):
        check_regions(regions, 2 * HUGE, HUGE)


def test_poison_page_lists_take_single_pages_and_ranges_within_the_image():
    assert parse_pages("12, 4096-4098", 5000) == {12, 4096, 4097, 4098}
    with pytest.raises(ProtocolError, match="outside the image's 100 pages"):
        parse_pages("99-100", 100)
    with pytest.raises(ProtocolError, match="not N or N-M"):
        parse_pages("twelve", 100)


def test_a_poison_rate_picks_the_same_pages_for_the_same_seed():
    assert sample_pages(0.01, 10_000, 7) == sample_pages(0.01, 10_000, 7)
    assert len(sample_pages(0.01, 10_000, 7)) == 100 and sample_pages(0, 10, 7) == set()
    assert len(sample_pages(1e-9, 10, 7)) == 1  # any rate above zero poisons something
    with pytest.raises(ProtocolError):
        sample_pages(1.5, 10, 7)

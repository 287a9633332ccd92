"""The manifest of a guest image: it round-trips through msgpack, and anything malformed is a
ProtocolError naming what is wrong."""

from array import array

import msgpack
import pytest

from migrator.protocol import PAGE_SIZE
from migrator.protocol.digest import ZERO_DIGEST, digests, mismatches, page_digest
from migrator.protocol.errors import ProtocolError
from migrator.protocol.manifest import DATA, POISON, ZERO, Manifest, Region


def _manifest(pages: int = 4) -> Manifest:
    return Manifest("img-1", [Region("low", 0, 2 * PAGE_SIZE), Region("high", 2 * PAGE_SIZE,
                                                                       (pages - 2) * PAGE_SIZE)],
                    array("Q", range(pages)), bytes([DATA, ZERO, POISON, DATA][:pages]))


def test_a_manifest_round_trips_through_its_encoding():
    m = _manifest()
    back = Manifest.decode(m.encode())
    assert (back.image_id, back.regions, back.digests, back.kinds) == (
        m.image_id, m.regions, m.digests, m.kinds)
    assert back.size == 4 * PAGE_SIZE and back.pages == 4 and back.count(ZERO) == 1


def test_regions_must_be_contiguous_and_page_aligned():
    with pytest.raises(ProtocolError, match="not contiguous"):
        Manifest("x", [Region("a", PAGE_SIZE, PAGE_SIZE)], array("Q", [0]), bytes([DATA]))


def test_digests_and_kinds_must_cover_every_page():
    with pytest.raises(ProtocolError, match="1 digests"):
        Manifest("x", [Region("a", 0, 2 * PAGE_SIZE)], array("Q", [0]), bytes([DATA, DATA]))


def test_an_unknown_page_kind_is_named():
    with pytest.raises(ProtocolError, match="unknown page kind 7"):
        Manifest("x", [Region("a", 0, PAGE_SIZE)], array("Q", [0]), bytes([7]))


@pytest.mark.parametrize("change, words", [
    ({"version": 2}, "version 2 is not supported"),
    ({"digests": "text"}, "'digests' is a str"),
    ({"image_id": True}, "'image_id' is a bool"),
])
def test_a_malformed_manifest_says_which_field(change, words):
    fields = msgpack.unpackb(_manifest().encode(), raw=False)
    with pytest.raises(ProtocolError, match=words):
        Manifest.decode(msgpack.packb({**fields, **change}))


def test_bytes_that_are_not_msgpack_are_a_protocol_error():
    with pytest.raises(ProtocolError, match="malformed manifest"):
        Manifest.decode(b"\xc1")


def test_page_digests_are_xxh3_of_each_4_kib_page_and_mismatches_are_found():
    data = bytearray(3 * PAGE_SIZE)
    data[PAGE_SIZE] = 1
    d = digests(data)
    assert d[0] == d[2] == ZERO_DIGEST == page_digest(bytes(PAGE_SIZE)) != d[1]
    assert mismatches(bytes(PAGE_SIZE), d, 1) == [1]
    with pytest.raises(ValueError):
        digests(b"\0" * 100)

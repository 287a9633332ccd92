"""Page digests: XXH3-64 of each 4 KiB page."""

from array import array

import xxhash

from . import PAGE_SIZE

_xxh3 = xxhash.xxh3_64_intdigest
ZERO_PAGE = bytes(PAGE_SIZE)
ZERO_DIGEST = _xxh3(ZERO_PAGE)


def page_digest(page: bytes | memoryview) -> int:
    return _xxh3(page)


def digests(data: bytes | memoryview) -> array:
    """Digests of every 4 KiB page of data (its length a multiple of 4 KiB), as array('Q')."""
    view = memoryview(data).cast("B")
    if len(view) % PAGE_SIZE:
        raise ValueError(f"{len(view)} bytes is not a whole number of {PAGE_SIZE}-byte pages")
    return array("Q", (_xxh3(view[i:i + PAGE_SIZE]) for i in range(0, len(view), PAGE_SIZE)))


def mismatches(data: bytes | memoryview, expected: array | memoryview, first_page: int) -> list[int]:
    """Indices of the pages of data whose digest differs from expected[first_page + i]."""
    view = memoryview(data).cast("B")
    return [first_page + i for i, off in enumerate(range(0, len(view), PAGE_SIZE))
            if _xxh3(view[off:off + PAGE_SIZE]) != expected[first_page + i]]

"""Which 4 KiB pages of an image are poisoned (an uncorrectable memory error on the source).

A poisoned page is never transferred: the destination installs a poison marker
(UFFDIO_POISON) instead, so the guest gets SIGBUS there as it would on the source.
"""

from __future__ import annotations

import random

from .errors import ProtocolError


def parse_pages(text: str, pages: int, what: str = "poison") -> set[int]:
    """'12,4096-4100' -> {12, 4096, ..., 4100}, each below pages."""
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            first, _, last = part.partition("-")
            lo, hi = int(first), int(last or first)
        except ValueError:
            raise ProtocolError(f"{what} page {part!r} is not N or N-M (4 KiB page indices)") from None
        if not 0 <= lo <= hi < pages:
            raise ProtocolError(f"{what} pages {part!r} are outside the image's {pages} pages")
        out.update(range(lo, hi + 1))
    return out


def sample_pages(rate: float, pages: int, seed: int) -> set[int]:
    """A deterministic sample of about rate * pages pages (at least one when rate > 0)."""
    if not 0 <= rate <= 1:
        raise ProtocolError(f"poison rate {rate} must be within [0, 1], e.g. 0.0001")
    if rate == 0:
        return set()
    count = max(1, round(rate * pages))
    return set(random.Random(f"poison:{seed}").sample(range(pages), count))

"""Corruption injection: wrong bytes in some page replies, so that the destination's
verification, refetch and failure paths run (`migrator source --inject-corruption`).

The C sender does the injecting (migrator/_cffi_src/source_inject.c); this holds what it is
told: the rate, the pages that are always wrong, and per session which pages were served
wrong once already (their next request is served right).
"""

from __future__ import annotations

from ..protocol.errors import ProtocolError
from ..protocol.poison import parse_pages

KINDS = ("flipped_bit", "other_page", "stale", "short_frame")  # source_inject.c's order


class Corruption:
    def __init__(self, rate: float, pages: set[int], image_pages: int):
        if not 0 <= rate <= 1:
            raise ProtocolError(f"corruption rate {rate} must be within [0, 1], e.g. 0.01")
        self.rate, self.pages, self.image_pages = rate, frozenset(pages), image_pages
        self.threshold = min(int(rate * 2**32), 2**32 - 1)
        self.always_wrong: bytes | None = None
        if pages:
            always = bytearray(image_pages)
            for p in pages:
                always[p] = 1
            self.always_wrong = bytes(always)

    @classmethod
    def parse(cls, rate: float, pages: str | None, image_pages: int) -> Corruption | None:
        """From the command line's --inject-corruption and --inject-corruption-pages; None
        when both are off."""
        listed = parse_pages(pages, image_pages, what="corrupted") if pages else set()
        if not rate and not listed:
            return None
        return cls(rate, listed, image_pages)

    def session_map(self) -> bytearray:
        """A fresh record of the pages served wrong at random in one session."""
        return bytearray(self.image_pages)

    def as_json(self) -> dict:
        return {"rate": self.rate, "pages": sorted(self.pages)[:100],
                "pages_count": len(self.pages)}

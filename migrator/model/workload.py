"""What the modelled guest touches, and which of its pages are zero, at any size.

Up to EXACT_PAGES (4 GiB) the model replays the guest's very own sequences (guest/patterns.py,
the same seed) and the source's very own image plan (source/synthetic.py). Beyond, it
aggregates: the pattern's page is drawn from the same distribution without materialising a
table per page (zipf: the exact head for the first ZIPF_HEAD ranks, the continuous power law
beyond; the scatter of ranks over memory is the guest's), and the image's page kinds repeat
those of its first EXACT_PAGES with period EXACT_PAGES (its runs are at most 16 MiB long and
drawn independently, so a 4 GiB window holds their statistics).
"""

from __future__ import annotations

import bisect
import itertools
import random
from array import array
from functools import lru_cache

from ..guest import patterns
from ..protocol import PAGE_SIZE

EXACT_PAGES = 1 << 20  # 4 GiB of 4 KiB pages
ZIPF_HEAD = 1 << 16


@lru_cache(maxsize=4)
def zero_map(pages: int, seed: int) -> bytes:
    """1 per zero page of the image of seed, for min(pages, EXACT_PAGES) pages."""
    from ..source.synthetic import plan

    n = min(pages, EXACT_PAGES)
    out = bytearray(n)
    for run in plan(n, seed):
        if run.kind == "zero":
            out[run.first_page:run.first_page + run.pages] = b"\1" * run.pages
    return bytes(out)


def is_zero(zeros: bytes, page: int) -> bool:
    return bool(zeros[page % len(zeros)])


def data_pages_per_granule(zeros: bytes, pages: int, granule_pages: int) -> array:
    """Data (non-zero) pages of each granule over one period of the map (granules repeat)."""
    period = len(zeros)
    n = max(1, min(pages, period) // granule_pages) if granule_pages <= period else 1
    if granule_pages > period:  # a granule spans whole periods: all alike
        whole, rest = divmod(granule_pages, period)
        data = whole * (period - sum(zeros)) + (rest - sum(zeros[:rest]))
        return array("q", [data])
    return array("q", (granule_pages - sum(zeros[g * granule_pages:(g + 1) * granule_pages])
                       for g in range(n)))


class _Zipf:
    """Ranks 0.. with P(rank r) proportional to 1/(r+1)^s: exact head, continuous tail."""

    def __init__(self, pages: int, s: float = patterns.ZIPF_S):
        self.pages, self.s = pages, s
        head = min(pages, ZIPF_HEAD)
        self.cum = list(itertools.accumulate(1.0 / (r ** s) for r in range(1, head + 1)))
        # integral of x^-s from head+0.5 to pages+0.5
        a, b = head + 0.5, pages + 0.5
        self.tail = (a ** (1 - s) - b ** (1 - s)) / (s - 1) if pages > head else 0.0
        self.total = self.cum[-1] + self.tail
        self.head = head

    def draw(self, rng: random.Random) -> int:
        u = rng.random() * self.total
        if u < self.cum[-1]:
            return bisect.bisect_left(self.cum, u)
        u -= self.cum[-1]  # invert the tail's integral
        a = self.head + 0.5
        x = (a ** (1 - self.s) - u * (self.s - 1)) ** (1 / (1 - self.s))
        return min(self.pages - 1, int(x - 0.5))


def sequences(pattern: str, pages: int, vcpus: int, accesses: int, seed: int,
              trace_path: str | None = None) -> list[list[int]]:
    """Each vCPU's 4 KiB page indices, in order."""
    if trace_path:
        from ..guest import trace

        return [v.pages for v in trace.load(trace_path, pages)]
    if pages <= EXACT_PAGES:
        return [patterns.pages_for(pattern, pages, v, vcpus, accesses, seed) for v in range(vcpus)]
    out = []
    scatter = patterns._scatter(pages, seed)
    zipf = _Zipf(pages) if pattern == "zipf" else None
    for v in range(vcpus):
        rng = random.Random(f"{seed}:{v}:{pattern}")
        if pattern == "sequential":
            stripe = pages // vcpus
            out.append([v * stripe + i % stripe for i in range(accesses)])
        elif pattern == "uniform":
            out.append([rng.randrange(pages) for _ in range(accesses)])
        elif pattern == "zipf":
            out.append([scatter(zipf.draw(rng)) for _ in range(accesses)])
        elif pattern == "hotset":
            hot = max(1, int(pages * patterns.HOTSET_FRACTION))
            out.append([scatter(rng.randrange(hot)) if rng.random() < patterns.HOTSET_HIT_RATE
                        else rng.randrange(pages) for _ in range(accesses)])
        else:
            raise ValueError(f"unknown pattern {pattern!r}: use one of {', '.join(patterns.PATTERNS)}")
    return out


def granule_bytes(page_bytes_per_granule: array, granule: int) -> int:
    """Bytes on the wire for one granule: its data pages only (zero pages never travel)."""
    return page_bytes_per_granule[granule % len(page_bytes_per_granule)] * PAGE_SIZE

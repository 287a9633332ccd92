"""A synthetic guest memory image, deterministic from a seed.

Real guest RAM is not uniform: free memory is zero in long stretches, buffers are filled with
the same pattern, and the rest is data that does not repeat. The image is a sequence of runs of
pages, each run one of three kinds:

- zero runs (~27 % of pages), long: the destination installs them without a transfer;
- repeated runs (~17 %): copies of one of a few pattern pages (0xff, a poison word, small
  structs repeated, random pages);
- data runs (the rest): pseudo-random bytes, every page unique.

The plan of runs comes from one random.Random seeded with the seed; every byte of a page is a
function of the seed and the page's position, so the content does not depend on the order or
chunking in which it is written, and a smaller image of a seed is a prefix of a larger one.

Data pages are windows of a 32 MiB pseudo-random pool (SHAKE-256 of the seed) stamped in their
first 16 bytes with a salt and the page number, which makes every data page unique. Filling
4 GiB this way costs about 2 s, mostly first-touch page faults; SHAKE over every byte would
add 4-5 s more (~0.5 GB/s here).
"""

from __future__ import annotations

import hashlib
import random
import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

import xxhash

from migrator.protocol import PAGE_SIZE
from migrator.protocol.digest import ZERO_DIGEST, page_digest
from migrator.protocol.manifest import DATA, ZERO

FORMAT = "synthetic-v1"  # bump when the recipe changes: the same seed then means other bytes

_ZERO_RUN, _REPEAT_RUN, _DATA_RUN = "zero", "repeat", "data"
_KINDS = (_ZERO_RUN, _REPEAT_RUN, _DATA_RUN)
_FRACTION = {_ZERO_RUN: 0.27, _REPEAT_RUN: 0.17, _DATA_RUN: 0.56}  # of pages
_MEAN_RUN = {_ZERO_RUN: 128, _REPEAT_RUN: 24, _DATA_RUN: 48}  # pages
# Runs are drawn with probability fraction/mean, so each kind's share of *pages* is its fraction.
_WEIGHTS = [_FRACTION[k] / _MEAN_RUN[k] for k in _KINDS]
_MAX_RUN = 4096  # pages (16 MiB)
_PATTERNS = 16
_POOL_BYTES = 32 << 20
_STAMP = struct.Struct("<QQ")


@dataclass(frozen=True, slots=True)
class Run:
    kind: str
    first_page: int
    pages: int
    arg: int  # pattern index for repeated runs, pool offset for data runs


def plan(pages: int, seed: int) -> Iterator[Run]:
    """The runs covering pages [0, pages), in order."""
    rng = random.Random(f"{FORMAT}:{seed}")
    page = 0
    while page < pages:
        kind = rng.choices(_KINDS, _WEIGHTS)[0]
        n = min(1 + int(rng.expovariate(1 / _MEAN_RUN[kind])), _MAX_RUN)
        if kind == _REPEAT_RUN:
            arg = rng.randrange(_PATTERNS)
        elif kind == _DATA_RUN:
            arg = rng.randrange((_POOL_BYTES - n * PAGE_SIZE) // 8 + 1) * 8
        else:
            arg = 0
        n = min(n, pages - page)
        yield Run(kind, page, n, arg)
        page += n


def _xof(seed: int, what: str, size: int) -> bytes:
    return hashlib.shake_256(f"{FORMAT}:{seed}:{what}".encode()).digest(size)


def pattern_pages(seed: int) -> list[bytes]:
    """The small set of pages that repeated runs copy; none of them is all zero."""
    out = [b"\xff" * PAGE_SIZE, (0xDEADBEEF).to_bytes(8, "little") * (PAGE_SIZE // 8)]
    for i in range(6):  # a small struct repeated, like an array of initialised records
        unit = 16 << (i % 3)
        out.append(_xof(seed, f"struct{i}", unit) * (PAGE_SIZE // unit))
    while len(out) < _PATTERNS:
        out.append(_xof(seed, f"page{len(out)}", PAGE_SIZE))
    assert all(p != bytes(PAGE_SIZE) for p in out)
    return out


def fill(buf: memoryview, seed: int) -> tuple[array, bytearray]:
    """Write the image for seed into buf (zeroed, writable, a whole number of pages).

    Returns the digest and kind of every page; zero pages are left untouched.
    """
    pages = len(buf) // PAGE_SIZE
    pool = memoryview(_xof(seed, "pool", _POOL_BYTES))
    patterns = pattern_pages(seed)
    pattern_digests = [page_digest(p) for p in patterns]
    salt = xxhash.xxh3_64_intdigest(f"{FORMAT}:{seed}:salt".encode()) | 1  # never zero
    digests = array("Q", [0]) * pages
    kinds = bytearray(pages)  # DATA == 0
    stamp = _STAMP.pack_into
    xxh3 = xxhash.xxh3_64_intdigest
    for run in plan(pages, seed):
        start, end = run.first_page * PAGE_SIZE, (run.first_page + run.pages) * PAGE_SIZE
        first, last = run.first_page, run.first_page + run.pages
        if run.kind == _ZERO_RUN:
            digests[first:last] = array("Q", [ZERO_DIGEST]) * run.pages
            kinds[first:last] = bytes([ZERO]) * run.pages
        elif run.kind == _REPEAT_RUN:
            buf[start:end] = patterns[run.arg] * run.pages
            digests[first:last] = array("Q", [pattern_digests[run.arg]]) * run.pages
        else:
            buf[start:end] = pool[run.arg:run.arg + end - start]
            for page in range(first, last):
                stamp(buf, page * PAGE_SIZE, salt, page)
            digests[first:last] = array(
                "Q", [xxh3(buf[o:o + PAGE_SIZE]) for o in range(start, end, PAGE_SIZE)])
    assert DATA == 0
    return digests, kinds

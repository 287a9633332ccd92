"""The guest's access rate after the migration: what its memory's mappings cost it from now on.

Random 8-byte loads over the whole of guest memory (C, GIL released, no clock in the loop),
best of a few rounds: with 4 KiB PTEs most of them miss the TLB; with 2 MiB PMDs (thp after
collapse, hugetlb 2M) or 1 GiB mappings, few do.
"""

from __future__ import annotations

import time

from cffi_uffd import Mapping

from .. import smaps
from ._native import ffi, lib

ROUNDS = 5


def access_rate(view: Mapping, loads: int, seed: int, seconds: float | None = None,
                size: int | None = None) -> dict:
    """Loads per second over the view's first size bytes (all of it by default; they must be
    all present: a fault would be timed). seconds: rounds go on until that long has passed
    (at least one), else ROUNDS of them."""
    base = ffi.cast("const uint8_t *", view.address)
    best = float("inf")
    started = time.monotonic()
    rounds = 0
    while rounds < ROUNDS if seconds is None else (not rounds or
                                                   time.monotonic() - started < seconds):
        t0 = time.perf_counter_ns()
        lib.random_reads(base, size or view.length, loads, seed + rounds)
        best = min(best, time.perf_counter_ns() - t0)
        rounds += 1
    mapped = smaps.mapping(view.address)
    return {"loads": loads, "rounds": rounds, "best_seconds": best / 1e9,
            "accesses_per_second": loads / (best / 1e9),
            # how the view was mapped while measured (hugetlb counts apart from PMD-mapped shmem)
            "view_pmd_mapped_bytes": mapped.get("ShmemPmdMapped", 0),
            "view_hugetlb_bytes": mapped.get("Shared_Hugetlb", 0) + mapped.get("Private_Hugetlb", 0)}

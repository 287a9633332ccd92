"""The one way migrator grows and shrinks the hugetlb pools, and says what the kernel gave.

Counts are of *available* pages: free pages that no mapping has claimed yet
(free_hugepages - resv_hugepages), i.e. what a new guest can have.

- available(size): how many there are now.
- reserve(size, n): grow the pool until at least n pages are available; never shrinks it.
- release(size, n): give back n available pages (all of them when n is None); pages in use
  or claimed by a mapping stay, the kernel refuses to free those.
- with reserved(size, n) as got: for the length of a run (an experiment, a test), make n pages
  available; yields how many are (fewer when memory is fragmented, 1 GiB pages especially);
  gives back what it added on the way out.
- snapshot(): every pool the kernel offers (for the host check and results.json).

The kernel allocates what it can when nr_hugepages is raised and silently stops short when
physical memory is too fragmented, which is common for 1 GiB pages long after boot. On a
shortfall we ask the kernel to compact memory once and try again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from cffi_uffd import hugepages

from migrator.units import hugepage_label

_COMPACT = Path("/proc/sys/vm/compact_memory")


def _available(pool: hugepages.Pool) -> int:
    return max(0, pool.available)


def available(page_size: int) -> int:
    """Pages of page_size free and not claimed by a mapping. ValueError: no such pool."""
    return _available(hugepages.pool(page_size))


def snapshot() -> dict[str, dict]:
    """Every pool the kernel offers, keyed "2M", "1G": page_size, total, free, reserved
    (claimed by mappings), surplus and available."""
    out = {}
    for size in hugepages.sizes():
        p = hugepages.pool(size)
        out[hugepage_label(size)] = {**p.as_dict(), "available": _available(p)}
    return out


def _state(pool: hugepages.Pool) -> dict:
    return {"total": pool.total, "surplus": pool.surplus, "free": pool.free,
            "reserved": pool.reserved, "available": _available(pool)}


def _compact() -> bool:
    try:
        _COMPACT.write_text("1")
    except OSError:
        return False
    return True


def boot_hint(page_size: int, count: int) -> str:
    label = hugepage_label(page_size)
    return (f"reserve them at boot: add `hugepagesz={label} hugepages={count}` to the kernel "
            f"command line (1G pages need physically contiguous memory, which fragments after "
            f"boot), or free memory and retry")


def reserve(page_size: int, count: int) -> dict:
    """Grow the pool so that at least count pages are available. Raises PermissionError."""
    before = hugepages.pool(page_size)
    result = {"size": hugepage_label(page_size), "page_size": page_size, "asked": count,
              "before": _state(before), "compacted": False}
    after = before
    want = before.total + max(0, count - _available(before))
    if want != before.total:
        hugepages.set_total(page_size, want)
        after = hugepages.pool(page_size)
        if _available(after) < count and _compact():
            result["compacted"] = True
            hugepages.set_total(page_size, want)
            after = hugepages.pool(page_size)
    result["after"] = _state(after)
    result["got"] = min(count, _available(after))
    # Persistent pages, not total: a surplus page in use when the pool was grown became one of
    # the pool's own, and must be given back with what was allocated once its user lets go.
    result["added"] = after.persistent - before.persistent
    result["ok"] = count == 0 or result["got"] > 0
    result["short"] = result["got"] < count
    result["hint"] = boot_hint(page_size, count) if result["short"] else None
    return result


def release(page_size: int, count: int | None = None) -> dict:
    """Give back count available pages (None: all of them). Raises PermissionError."""
    before = hugepages.pool(page_size)
    give = _available(before) if count is None else min(count, _available(before))
    if give:
        hugepages.set_total(page_size, before.persistent - give)
    after = hugepages.pool(page_size)
    return {"size": hugepage_label(page_size), "page_size": page_size,
            "asked": "all" if count is None else count, "before": _state(before),
            "after": _state(after), "released": before.total - after.total, "ok": True}


@contextlib.contextmanager
def reserved(page_size: int, count: int) -> Iterator[int]:
    """Make count pages available for the length of the block; yield how many are.

    Only what this call added to the pool is given back, so pages someone else reserved stay.
    Raises PermissionError (not root) or ValueError (no pool of that size) before yielding.
    """
    before = hugepages.pool(page_size).persistent
    result: dict = {}
    try:
        result = reserve(page_size, count)
        yield result["got"]
    finally:
        # interrupted inside reserve (a SIGINT as a sweep's next point reserves), the pages it
        # had added by then are the pool's growth since
        added = result.get("added", hugepages.pool(page_size).persistent - before)
        if added > 0:
            hugepages.set_total(page_size, max(0, hugepages.pool(page_size).persistent - added))

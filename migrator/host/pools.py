"""Growing and shrinking the hugetlb pools, and saying what the kernel really gave.

Counts are of *available* pages: free pages that no mapping has claimed yet
(free_hugepages - resv_hugepages), i.e. what a new guest can have.

- reserve(size, n): grow the pool until at least n pages are available; never shrinks it.
- release(size, n): give back n available pages (all of them when n is None); pages in use
  or claimed by a mapping stay, the kernel refuses to free those.

The kernel allocates what it can when nr_hugepages is raised and silently stops short when
physical memory is too fragmented, which is common for 1 GiB pages long after boot. On a
shortfall we ask the kernel to compact memory once and try again.
"""

from __future__ import annotations

from pathlib import Path

from cffi_uffd import hugepages

from migrator.units import hugepage_label

_COMPACT = Path("/proc/sys/vm/compact_memory")


def _available(pool: hugepages.Pool) -> int:
    return max(0, pool.available)


def _state(pool: hugepages.Pool) -> dict:
    return {"total": pool.total, "free": pool.free, "reserved": pool.reserved,
            "available": _available(pool)}


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
    result["added"] = after.total - before.total
    result["ok"] = count == 0 or result["got"] > 0
    result["short"] = result["got"] < count
    result["hint"] = boot_hint(page_size, count) if result["short"] else None
    return result


def release(page_size: int, count: int | None = None) -> dict:
    """Give back count available pages (None: all of them). Raises PermissionError."""
    before = hugepages.pool(page_size)
    give = _available(before) if count is None else min(count, _available(before))
    if give:
        hugepages.set_total(page_size, before.total - give)
    after = hugepages.pool(page_size)
    return {"size": hugepage_label(page_size), "page_size": page_size,
            "asked": "all" if count is None else count, "before": _state(before),
            "after": _state(after), "released": before.total - after.total, "ok": True}

"""Hugetlb page pools as sysfs shows them: their sizes, their counts, and setting a pool's
total (root). Policy (how many to reserve, when to give them back) is the caller's."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

_SYSFS = Path("/sys/kernel/mm/hugepages")


@dataclass(frozen=True)
class Pool:
    page_size: int
    total: int
    free: int
    reserved: int
    surplus: int

    @property
    def persistent(self) -> int:
        """The pool's own pages: what writing nr_hugepages sets. total (nr_hugepages as read)
        also counts surplus pages, in use by a mapping after the pool was shrunk below them."""
        return self.total - self.surplus

    @property
    def available(self) -> int:
        """Free pages not already promised to a mapping (free_hugepages counts those too)."""
        return self.free - self.reserved

    def as_dict(self) -> dict:
        return asdict(self)


def _dir(page_size: int) -> Path:
    return _SYSFS / f"hugepages-{page_size // 1024}kB"


def sizes() -> list[int]:
    """Huge page sizes the kernel offers, in bytes."""
    if not _SYSFS.is_dir():
        return []
    return sorted(int(p.name.split("-")[1][:-2]) * 1024 for p in _SYSFS.glob("hugepages-*kB"))


def pool(page_size: int) -> Pool:
    d = _dir(page_size)
    if not d.is_dir():
        raise ValueError(f"this kernel has no {page_size // 1024} kB huge pages (no {d})")
    read = lambda name: int((d / name).read_text())  # noqa: E731
    return Pool(page_size, read("nr_hugepages"), read("free_hugepages"),
                read("resv_hugepages"), read("surplus_hugepages"))


def set_total(page_size: int, count: int) -> int:
    """Ask the kernel for count persistent pages in the pool (surplus pages still in use are
    made persistent first); returns how many it really has now, surplus included."""
    path = _dir(page_size) / "nr_hugepages"
    try:
        path.write_text(str(count))
    except PermissionError as e:
        raise PermissionError(f"cannot write {path}: reserving huge pages needs root") from e
    return pool(page_size).total

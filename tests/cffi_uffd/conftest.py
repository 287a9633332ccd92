"""Fixtures for the cffi_uffd tests: descriptors, shmem views, huge pages, handler and toucher threads.

Everything runs against the real kernel. Huge pages are borrowed from the pool through
migrator.host.pools.reserved() and always given back; the toucher is the guest's C touch loop
(migrator.guest.touch), which releases the GIL while it waits on a fault.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from cffi_uffd import PAGE_SIZE, SIZE_1G, SIZE_2M, Mapping, fallocate, hugepages, memfd
from helpers.uffd import new_uffd, resolver, toucher  # noqa: F401 (fixtures)
from migrator.host import pools


@dataclass
class Views:
    """One memfd seen twice: the guest view (registered, faults) and the alias view (writes)."""

    fd: int
    guest: Mapping
    alias: Mapping
    page_size: int

    def page(self, index: int) -> int:
        return self.guest.address + index * self.page_size


@pytest.fixture
def views() -> Iterator[Callable[..., Views]]:
    """A factory of populated memfd views. MINOR faults fire only for pages already in the page
    cache (a hole is silently zero-filled), so the whole memfd is fallocated first."""
    made: list[Views] = []

    def make(pages: int, page_size: int = PAGE_SIZE) -> Views:
        size = pages * page_size
        fd = memfd(f"test-{page_size}", size, page_size)
        fallocate(fd, 0, size)
        v = Views(fd, Mapping.shared(fd, size, page_size=page_size),
                  Mapping.shared(fd, size, page_size=page_size), page_size)
        made.append(v)
        return v

    yield make
    for v in made:
        v.guest.close()
        v.alias.close()
        os.close(v.fd)


@pytest.fixture(scope="module", params=[SIZE_2M, SIZE_1G], ids=["2M", "1G"])
def huge_page_size(request) -> Iterator[int]:
    """One free huge page of each size, borrowed from the pool for the module."""
    size = request.param
    try:
        with pools.reserved(size, 1) as got:
            if got < 1:
                pytest.skip(f"the kernel refused to reserve one {size >> 20} MiB huge page "
                            f"(pool now {hugepages.pool(size)})")
            yield size
    except ValueError as e:  # this kernel has no pool of that size
        pytest.skip(str(e))


@pytest.fixture
def huge_2m() -> Iterator[int]:
    """One free 2 MiB huge page for the test."""
    with pools.reserved(SIZE_2M, 1) as got:
        if got < 1:
            pytest.skip(f"the kernel refused to reserve one 2 MiB huge page "
                        f"(pool now {hugepages.pool(SIZE_2M)})")
        yield SIZE_2M

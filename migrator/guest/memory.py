"""The guest's RAM as a VMM sets it up for postcopy: a populated memfd, registered MINOR."""

from __future__ import annotations

import os

from cffi_uffd import (PAGE_SIZE, Feature, Mapping, RegisterMode, UffdError, Userfaultfd,
                       fallocate, memfd, populate)

from ..errors import MigratorError
from . import thp_backing as backing


class GuestMemory:
    def __init__(self, size: int, page_size: int, thp_folio: int = 0):
        """thp_folio: back the shmem memfd with folios of that size (the `thp` mode), 0: not."""
        self.size, self.page_size = size, page_size
        self.fd = memfd("guest-ram", size, page_size)
        self.thp: dict | None = None
        if not thp_folio:
            try:
                # MINOR faults fire only for pages already in the page cache; a hole would be
                # zero-filled by the kernel without any event. So populate all of it first.
                fallocate(self.fd, 0, size)
            except UffdError as e:
                os.close(self.fd)
                raise MigratorError(f"cannot allocate {size} bytes of {page_size}-byte pages for "
                                    f"guest RAM: {e}") from e
        # Preallocate like a VMM with -mem-prealloc: shmem's fallocate leaves pages to be zeroed
        # on first touch (hugetlb zeroes at fallocate), which would otherwise land on the
        # destination during the migration and skew the comparison between modes.
        align = thp_folio  # a PMD maps a folio only at an address aligned to it
        with Mapping.shared(self.fd, size, page_size=page_size, align=align) as prealloc:
            if thp_folio:
                # thp: fallocate would fill the page cache with 4 KiB folios (it has no VMA to
                # read MADV_HUGEPAGE from). Faulting the whole file in through a MADV_HUGEPAGE
                # view allocates 2 MiB folios (shmem_enabled `advise`) and maps them by PMD.
                self.thp = backing.populate_huge(prealloc, thp_folio)
            else:
                populate(prealloc.address, size)
        self.view = Mapping.shared(self.fd, size, page_size=page_size, align=align)
        if thp_folio:
            backing.advise_huge_view(self.view, thp_folio)
        self.uffd = Userfaultfd()
        shmem = page_size == PAGE_SIZE
        minor = Feature.MINOR_SHMEM if shmem else Feature.MINOR_HUGETLBFS
        missing = Feature.MISSING_SHMEM if shmem else Feature.MISSING_HUGETLBFS
        # EXACT_ADDRESS: otherwise hugetlb fault addresses are rounded down to the huge page.
        self.uffd.api(minor | missing | Feature.EXACT_ADDRESS | Feature.THREAD_ID)
        # MISSING as well as MINOR: a hole in the page cache (e.g. a page the destination took
        # away after a memory error) must fault to the destination, not be zero-filled silently.
        self.uffd.register(self.view.address, size, RegisterMode.MINOR | RegisterMode.MISSING)

    def regions(self, layout_regions: list[dict]) -> list[dict]:
        """Firecracker-shaped region descriptions for the destination."""
        return [{"base_host_virt_addr": self.view.address + r["offset"], "size": r["size"],
                 "offset": r["offset"], "page_size": self.page_size} for r in layout_regions]

    def close(self) -> None:
        self.uffd.close()
        self.view.close()
        os.close(self.fd)

"""Memory for guests: memfds (shmem, hugetlb 2 MiB / 1 GiB), shared views, madvise, fallocate."""

from __future__ import annotations

import os

from ._native import ffi, lib
from .errors import raise_for

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SIZE_2M = 2 << 20
SIZE_1G = 1 << 30
_HUGE_FLAGS = {SIZE_2M: os.MFD_HUGE_2MB, SIZE_1G: os.MFD_HUGE_1GB}


def memfd(name: str, size: int, page_size: int = PAGE_SIZE) -> int:
    """A memfd of size bytes: shmem for PAGE_SIZE, hugetlb for 2 MiB or 1 GiB pages."""
    if size % page_size:
        raise ValueError(f"memfd size {size} is not a multiple of the page size {page_size}")
    flags = os.MFD_CLOEXEC
    if page_size != PAGE_SIZE:
        if page_size not in _HUGE_FLAGS:
            raise ValueError(f"unsupported page size {page_size}: use 4 KiB, 2 MiB or 1 GiB")
        flags |= os.MFD_HUGETLB | _HUGE_FLAGS[page_size]
    fd = os.memfd_create(name, flags)
    try:
        os.ftruncate(fd, size)
    except OSError:
        os.close(fd)
        raise
    return fd


def fallocate(fd: int, offset: int, length: int, *, punch_hole: bool = False) -> None:
    """Allocate (or with punch_hole, free) the file's pages. On hugetlb this takes pool pages."""
    mode = (lib.FALLOC_FL_PUNCH_HOLE | lib.FALLOC_FL_KEEP_SIZE) if punch_hole else 0
    rc = lib.allocate(fd, mode, offset, length)
    if rc < 0:
        raise_for("fallocate", -rc, f"fd {fd} offset 0x{offset:x} length 0x{length:x}")


def madvise(address: int, length: int, advice: int) -> None:
    rc = lib.advise(ffi.cast("void *", address), length, advice)
    if rc < 0:
        raise_for("madvise", -rc, f"advice {advice} at 0x{address:x}+0x{length:x}")


def dontneed(address: int, length: int) -> None:
    madvise(address, length, lib.MADV_DONTNEED)


def populate(address: int, length: int) -> None:
    """MADV_POPULATE_WRITE (5.14+): map the range's pages writable now, in one call.

    Cheaper than taking one page fault per 4 KiB page on first touch of a view.
    """
    madvise(address, length, lib.MADV_POPULATE_WRITE)


def advise_huge(address: int, length: int) -> None:
    """MADV_HUGEPAGE: shmem behind this range may get PMD-size folios when faulted in, if
    /sys/kernel/mm/transparent_hugepage/shmem_enabled (or the per-size knob) says `advise`."""
    madvise(address, length, lib.MADV_HUGEPAGE)


def collapse(address: int, length: int, pidfd: int | None = None) -> None:
    """MADV_COLLAPSE (6.1+) over [address, address + length): synchronously make each aligned
    PMD-size range huge and map it by PMD in the address space it is called for.

    With pidfd, process_madvise() does it in that process's address space (needs
    CAP_SYS_NICE and ptrace read access to it). Raises UffdError with the errno: EINVAL
    (no MADV_COLLAPSE, or an unsuitable mapping), EAGAIN (transient: a lock was busy),
    ENOMEM (no huge page to allocate), EPERM.
    """
    if pidfd is None:
        madvise(address, length, lib.MADV_COLLAPSE)
        return
    rc = lib.advise_process(pidfd, ffi.cast("void *", address), length, lib.MADV_COLLAPSE)
    if rc < 0:
        raise_for("process_madvise", -rc, f"MADV_COLLAPSE at 0x{address:x}+0x{length:x}")


def split(address: int, length: int) -> None:
    """MADV_SPLIT (HGM proposal): allow 4 KiB mappings of a hugetlb VMA. EINVAL without HGM."""
    madvise(address, length, lib.MADV_SPLIT)


class Mapping:
    """An mmap'ed range with its address known, viewable as a writable memoryview.

    Two Mappings of the same memfd are the "guest view" (registered with userfaultfd, where
    faults happen) and the "alias view" (unregistered, where the resolver writes page data).
    """

    def __init__(self, address: int, length: int, fd: int = -1, page_size: int = PAGE_SIZE):
        self.address, self.length, self.fd, self.page_size = address, length, fd, page_size
        self._view: memoryview | None = None

    @classmethod
    def shared(cls, fd: int, length: int, offset: int = 0, *, writable: bool = True,
               page_size: int = PAGE_SIZE, align: int = 0) -> Mapping:
        """align: place the mapping at a multiple of it (e.g. SIZE_2M, so that a PMD can
        map THP folios of the file there); 0: wherever the kernel puts it."""
        prot = lib.PROT_READ | (lib.PROT_WRITE if writable else 0)
        p = (lib.map_shared_aligned(length, prot, fd, offset, align) if align
             else lib.map_shared(length, prot, fd, offset))
        if p == ffi.NULL:
            raise_for("mmap", lib.last_errno(), f"MAP_SHARED fd {fd} length 0x{length:x}")
        return cls(int(ffi.cast("uintptr_t", p)), length, fd, page_size)

    @classmethod
    def anonymous(cls, length: int) -> Mapping:
        p = lib.map_anonymous(length)
        if p == ffi.NULL:
            raise_for("mmap", lib.last_errno(), f"anonymous length 0x{length:x}")
        return cls(int(ffi.cast("uintptr_t", p)), length)

    @property
    def view(self) -> memoryview:
        """The bytes of the mapping. Touching them from Python can fault like any access."""
        if self._view is None:
            self._view = memoryview(ffi.buffer(ffi.cast("char *", self.address), self.length))
        return self._view

    def close(self) -> None:
        if self.length:
            if self._view is not None:
                self._view.release()
                self._view = None
            rc = lib.unmap(ffi.cast("void *", self.address), self.length)
            if rc < 0:
                raise_for("munmap", -rc)
            self.length = 0

    def __enter__(self) -> Mapping:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

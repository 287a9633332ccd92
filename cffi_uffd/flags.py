"""Named flags for features, register modes and ioctls, valued from the kernel headers."""

import enum

from ._native import lib


class Feature(enum.IntFlag):
    PAGEFAULT_FLAG_WP = lib.UFFD_FEATURE_PAGEFAULT_FLAG_WP
    EVENT_FORK = lib.UFFD_FEATURE_EVENT_FORK
    EVENT_REMAP = lib.UFFD_FEATURE_EVENT_REMAP
    EVENT_REMOVE = lib.UFFD_FEATURE_EVENT_REMOVE
    MISSING_HUGETLBFS = lib.UFFD_FEATURE_MISSING_HUGETLBFS
    MISSING_SHMEM = lib.UFFD_FEATURE_MISSING_SHMEM
    EVENT_UNMAP = lib.UFFD_FEATURE_EVENT_UNMAP
    SIGBUS = lib.UFFD_FEATURE_SIGBUS
    THREAD_ID = lib.UFFD_FEATURE_THREAD_ID
    MINOR_HUGETLBFS = lib.UFFD_FEATURE_MINOR_HUGETLBFS
    MINOR_SHMEM = lib.UFFD_FEATURE_MINOR_SHMEM
    EXACT_ADDRESS = lib.UFFD_FEATURE_EXACT_ADDRESS
    WP_HUGETLBFS_SHMEM = lib.UFFD_FEATURE_WP_HUGETLBFS_SHMEM
    # Bit 13 is WP_UNPOPULATED upstream. It says nothing about HGM (see cffi_uffd.hgm).
    WP_UNPOPULATED = lib.UFFD_FEATURE_WP_UNPOPULATED
    POISON = lib.UFFD_FEATURE_POISON
    WP_ASYNC = lib.UFFD_FEATURE_WP_ASYNC
    MOVE = lib.UFFD_FEATURE_MOVE

    def names(self) -> list[str]:
        return [f.name.lower() for f in Feature if f in self]


class RegisterMode(enum.IntFlag):
    MISSING = lib.UFFDIO_REGISTER_MODE_MISSING
    WP = lib.UFFDIO_REGISTER_MODE_WP
    MINOR = lib.UFFDIO_REGISTER_MODE_MINOR


class Ioctl(enum.IntFlag):
    """Bits of the ioctl masks that UFFDIO_API and UFFDIO_REGISTER return."""

    REGISTER = 1 << lib._UFFDIO_REGISTER
    UNREGISTER = 1 << lib._UFFDIO_UNREGISTER
    WAKE = 1 << lib._UFFDIO_WAKE
    COPY = 1 << lib._UFFDIO_COPY
    ZEROPAGE = 1 << lib._UFFDIO_ZEROPAGE
    MOVE = 1 << lib._UFFDIO_MOVE
    WRITEPROTECT = 1 << lib._UFFDIO_WRITEPROTECT
    CONTINUE = 1 << lib._UFFDIO_CONTINUE
    POISON = 1 << lib._UFFDIO_POISON
    API = 1 << lib._UFFDIO_API

    def names(self) -> list[str]:
        return [f.name.lower() for f in Ioctl if f in self]

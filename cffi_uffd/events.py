"""userfaultfd events, named after the kernel's UFFD_EVENT_* constants."""

from dataclasses import dataclass

from ._native import lib


@dataclass(frozen=True, slots=True)
class PageFault:
    address: int
    write: bool
    wp: bool
    minor: bool
    thread_id: int  # 0 unless UFFD_FEATURE_THREAD_ID was requested


@dataclass(frozen=True, slots=True)
class Fork:
    uffd: int  # the child's new userfaultfd, already open in this process


@dataclass(frozen=True, slots=True)
class Remap:
    old_address: int
    new_address: int
    length: int


@dataclass(frozen=True, slots=True)
class Remove:
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Unmap:
    start: int
    end: int


Event = PageFault | Fork | Remap | Remove | Unmap


def from_native(e) -> Event:
    """Convert one `struct uffd_event` (flattened by _cffi_src/uffd.h) into its dataclass."""
    kind = e.event
    if kind == lib.UFFD_EVENT_PAGEFAULT:
        flags = e.flags
        return PageFault(
            address=e.address,
            write=bool(flags & lib.UFFD_PAGEFAULT_FLAG_WRITE),
            wp=bool(flags & lib.UFFD_PAGEFAULT_FLAG_WP),
            minor=bool(flags & lib.UFFD_PAGEFAULT_FLAG_MINOR),
            thread_id=e.ptid,
        )
    if kind == lib.UFFD_EVENT_FORK:
        return Fork(uffd=e.ufd)
    if kind == lib.UFFD_EVENT_REMAP:
        return Remap(old_address=e.address, new_address=e.arg1, length=e.arg2)
    if kind == lib.UFFD_EVENT_REMOVE:
        return Remove(start=e.address, end=e.arg1)
    if kind == lib.UFFD_EVENT_UNMAP:
        return Unmap(start=e.address, end=e.arg1)
    raise ValueError(f"unknown userfaultfd event 0x{kind:x}")

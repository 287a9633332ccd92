"""Proof, at the handshake, that the memory the destination fills is the memory the guest maps.

A guest hands over its userfaultfd and a memfd. If the memfd is not the file behind the range
it registered (another memfd, a regular file), the destination would verify every page in its
own view of that file and report the migration complete while the guest's RAM stays as it was.
So before saying `ready` the destination checks:

- the fd itself: a memfd (not a regular file), writable (not opened read-only, not sealed
  against writes), exactly the layout's size;
- the guest's mapping: where the guest's process is visible from here (SO_PEERCRED gives its
  pid; 0 when it is in another pid namespace), every VMA of /proc/PID/maps over the registered
  range maps this file (same device and inode) at the right offset;
- otherwise, through the userfaultfd: punch a hole in the handed file at one page (the last
  of each region) and UFFDIO_CONTINUE there in the guest's range. CONTINUE installs the page cache page of the
  file behind the guest's VMA and fails with EFAULT where that file has none, so it must fail
  while our file has a hole and succeed once we put a page back. Then the hole is punched again,
  which also unmaps the page from the guest, and filled, so the guest faults on it as on any
  other page. The guest is not running vCPUs yet: it waits for `ready`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from cffi_uffd import PageExists, UffdError, Userfaultfd, fallocate

from ..protocol.errors import ProtocolError

_F_GET_SEALS = getattr(fcntl, "F_GET_SEALS", 1034)
_F_SEAL_WRITE = getattr(fcntl, "F_SEAL_WRITE", 0x0008)
_F_SEAL_FUTURE_WRITE = 0x0010


def check_memfd(fd: int, size: int) -> os.stat_result:
    """The handed fd must be a writable memfd of exactly size bytes; ProtocolError if not."""
    st = os.fstat(fd)
    target = _fd_target(fd)
    if not stat.S_ISREG(st.st_mode):
        raise ProtocolError(f"the memory fd is not a file but {target!r}: hand over the memfd "
                            f"that backs guest RAM")
    if not target.startswith("/memfd:"):
        raise ProtocolError(f"the memory fd is a regular file ({target}), not a memfd: guest "
                            f"RAM must be a memfd (memfd_create), mapped shared by the guest")
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
        raise ProtocolError(f"the memfd {target} was handed over read-only: the destination "
                            f"writes the arriving pages into it; hand over a read-write fd")
    try:
        seals = fcntl.fcntl(fd, _F_GET_SEALS)
    except OSError:
        seals = 0
    if seals & (_F_SEAL_WRITE | _F_SEAL_FUTURE_WRITE):
        raise ProtocolError(f"the memfd {target} is sealed against writes (seals {seals:#x}): "
                            f"the destination writes the arriving pages into it")
    if st.st_size != size:
        raise ProtocolError(f"the memfd {target} is {st.st_size} bytes, the layout is {size}: "
                            f"size it exactly to the layout")
    return st


def _fd_target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"fd {fd}"


def prove(fd: int, st: os.stat_result, uffd_fd: int, base: int, region_ends: list[int],
          page_size: int, pid: int | None) -> str:
    """Prove the guest maps fd's file over [base, base + the last region's end); ProtocolError
    if not. Returns how it was proved, for the log."""
    maps = _read_maps(pid) if pid else None
    if maps is not None:
        _prove_by_maps(maps, st, base, max(region_ends), pid)
        return f"/proc/{pid}/maps"
    for end in region_ends:
        _prove_by_hole(fd, uffd_fd, base, end - page_size, page_size)
    return "a hole punched in the memfd, seen through the userfaultfd"


def _read_maps(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return f.read().splitlines()
    except OSError:
        return None  # gone, or not visible from here: the hole proof does not need it


def _prove_by_maps(maps: list[str], st: os.stat_result, base: int, size: int, pid: int) -> None:
    end, at = base + size, base
    for line in maps:
        fields = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if hi <= at or lo >= end:
            continue
        if lo > at:
            break
        major, minor = (int(x, 16) for x in fields[3].split(":"))
        inode, offset = int(fields[4]), int(fields[2], 16)
        name = fields[5] if len(fields) > 5 else "anonymous memory"
        if (inode, major, minor) != (st.st_ino, os.major(st.st_dev), os.minor(st.st_dev)):
            raise ProtocolError(
                f"the guest (pid {pid}) maps {name} (inode {inode}) at {at:#x}, not the memfd "
                f"it handed over (inode {st.st_ino}): hand over the memfd behind the range you "
                f"registered")
        if offset + (at - lo) != at - base:
            raise ProtocolError(f"the guest (pid {pid}) maps the memfd at {at:#x} from file "
                                f"offset {offset + at - lo:#x}, not {at - base:#x}: map it "
                                f"whole, from offset 0, at base_host_virt_addr")
        at = hi
        if at >= end:
            return
    raise ProtocolError(f"the guest (pid {pid}) maps nothing at {at:#x}, inside the range "
                        f"{base:#x}+{size:#x} it described: describe the range it maps")


def _prove_by_hole(fd: int, uffd_fd: int, base: int, offset: int, page_size: int) -> None:
    uffd = Userfaultfd(fd=uffd_fd)  # borrowed: never closed here
    address = base + offset
    try:
        try:
            fallocate(fd, offset, page_size, punch_hole=True)
        except OSError as e:
            raise ProtocolError(f"the memfd handed over cannot be checked (punching a hole at "
                                f"{offset:#x}: {e}): hand over a memfd that allows "
                                f"fallocate") from e
        if _continue(uffd, address, page_size):
            raise ProtocolError(
                "the guest's registered range has a page where the handed memfd has a hole: "
                "it maps another file; hand over the memfd behind the range you registered")
        try:
            fallocate(fd, offset, page_size)
        except OSError as e:  # e.g. ENOSPC: the huge page pool emptied by another process
            raise ProtocolError(f"the destination could not put back the page it took from the "
                                f"memfd at {offset:#x} for the check: {e}; free huge pages and "
                                f"connect again") from e
        if not _continue(uffd, address, page_size):
            raise ProtocolError(
                "the guest's registered range has no page where the handed memfd has one: it "
                "maps another file; hand over the memfd behind the range you registered")
    finally:
        try:  # unmap it from the guest again, and leave the file populated as it was
            fallocate(fd, offset, page_size, punch_hole=True)
            fallocate(fd, offset, page_size)
        except OSError:
            pass


def _continue(uffd: Userfaultfd, address: int, length: int) -> bool:
    """Whether the file behind the guest's VMA has a page at address (CONTINUE maps it)."""
    try:
        uffd.continue_(address, length)
        return True
    except PageExists:
        return True
    except UffdError as e:
        if e.errno == errno.EFAULT:
            return False
        if e.errno == errno.ESRCH:
            raise ProtocolError("the guest exited during the handshake") from None
        raise ProtocolError(f"UFFDIO_CONTINUE in the range the guest registered failed "
                            f"({e}): register the range MINOR with the userfaultfd handed "
                            f"over") from None

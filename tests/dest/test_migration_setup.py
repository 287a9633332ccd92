"""A Migration that cannot be set up leaves nothing behind: its view of the guest's memory is
unmapped, its C tables freed and its streams closed, and the guest's descriptors are left to the
session that received them (it closes them when it refuses the guest)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from array import array

import pytest

from cffi_uffd import PAGE_SIZE, SIZE_2M, HgmDetection, Userfaultfd, memfd
from migrator.dest.backing import choose
from migrator.dest.migration import Migration, SourceEndpoint
from migrator.protocol.manifest import DATA, Manifest, Region

from helpers.thp import shmem_thp  # noqa: F401  (fixture)

SIZE = 4 << 20
NO_HGM = HgmDetection(False, "madvise(MADV_SPLIT)", "EINVAL: this kernel has no HGM")


def _mappings_of(fd: int) -> list[str]:
    """Lines of /proc/self/maps that map fd's file (by its inode, not its name)."""
    inode = os.fstat(fd).st_ino
    with open("/proc/self/maps") as maps:
        return [line for line in maps if int(line.split()[4]) == inode]


def _manifest() -> Manifest:
    return Manifest("img", [Region("ram", 0, SIZE)], array("Q", bytes(8 * (SIZE // PAGE_SIZE))),
                    bytes([DATA]) * (SIZE // PAGE_SIZE))


@pytest.fixture
def refusing_source():
    """A loopback port bound but not listening: a connection to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield SourceEndpoint(f"http://127.0.0.1:{s.getsockname()[1]}", None)


def _refused(error: type[BaseException], mode: str, source: SourceEndpoint, **kw) -> None:
    """Set up a Migration of a real memfd and userfaultfd that fails with error; then nothing
    maps the memfd, and both descriptors are still open (the session closes what the guest
    sent)."""
    mem = memfd("guest", SIZE)
    uffd = Userfaultfd()
    try:
        with pytest.raises(error):
            Migration("s1", _manifest(), choose(mode, SIZE_2M, NO_HGM), source, uffd.fd, mem,
                      0x7f0000000000, **kw)
        assert _mappings_of(mem) == []
        os.fstat(mem)
        os.fstat(uffd.fd)
    finally:
        os.close(mem)
        uffd.close()


def test_a_migration_whose_source_refuses_the_connection_unmaps_its_view_and_frees_its_tables(
        refusing_source):
    _refused(OSError, "hgm", refusing_source)


def test_a_thp_migration_whose_guest_is_gone_unmaps_its_view_and_leaves_the_descriptors(
        shmem_thp, refusing_source):  # noqa: F811
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    guest_pid = int(gone.stdout)  # exited and reaped: pidfd_open finds no such process
    _refused(ProcessLookupError, "thp", refusing_source, guest_pid=guest_pid)

"""The destination proves that the memfd a guest hands over is the memory behind the range it
registered (dest/guestproof.py), and refuses anything else at the handshake with a message:
another memfd, a regular file, a read-only memfd, a size that does not match. Real guests'
memory and userfaultfd (guest/memory.py), in this process."""

from __future__ import annotations

import os
import struct

import pytest

from cffi_uffd import PAGE_SIZE, SIZE_2M, fallocate, memfd
from migrator import unixmessages
from migrator.dest import guestproof
from migrator.guest.memory import GuestMemory
from migrator.host import pools
from migrator.protocol.errors import ProtocolError

from .test_guest_handshake import SIZE, _hello, _open_fds, destination  # noqa: F401


def _hand_over(path: str, guest: GuestMemory, memory_fd: int) -> dict:
    s, layout = _hello(path)
    with s:
        unixmessages.send(s, {"type": "memory", "regions": guest.regions(layout["regions"])},
                          fds=[guest.uffd.fileno(), memory_fd])
        reply, _ = unixmessages.recv(s)
        if reply["type"] == "error":
            assert s.recv(1) == b""  # the destination closed its end: its session is over
    return reply


def _refused(destination, make_fd, words: str) -> None:
    path, daemon = destination
    guest = GuestMemory(SIZE, PAGE_SIZE)
    fd = make_fd(guest)
    before = _open_fds()
    try:
        reply = _hand_over(path, guest, fd)
    finally:
        os.close(fd)
        guest.close()
    assert reply["type"] == "error" and words in reply["message"], reply
    # (the listing's own descriptor, gone when read, is no leak)
    extra = {fd: t for fd in _open_fds() - before if (t := guestproof._fd_target(fd)) != f"fd {fd}"}
    assert not extra and daemon.added == [], extra


def test_another_memfd_than_the_registered_one_is_refused(destination):
    def other(_: GuestMemory) -> int:
        fd = memfd("other", SIZE)
        fallocate(fd, 0, SIZE)
        return fd

    _refused(destination, other, "not the memfd it handed over")


def test_a_regular_file_is_refused(destination, tmp_path):
    def regular(_: GuestMemory) -> int:
        fd = os.open(tmp_path / "ram", os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, SIZE)
        return fd

    _refused(destination, regular, "is a regular file")


def test_a_read_only_memfd_is_refused_with_a_message(destination):
    def read_only(guest: GuestMemory) -> int:
        return os.open(f"/proc/self/fd/{guest.fd}", os.O_RDONLY)

    _refused(destination, read_only, "handed over read-only")


def test_a_memfd_larger_than_the_layout_is_refused(destination):
    def larger(guest: GuestMemory) -> int:
        fd = os.dup(guest.fd)
        os.ftruncate(fd, SIZE * 2)
        return fd

    _refused(destination, larger, f"is {SIZE * 2} bytes, the layout is {SIZE}")


def test_the_guests_own_memfd_is_proved_by_its_maps():
    guest = GuestMemory(SIZE, PAGE_SIZE)
    try:
        st = guestproof.check_memfd(guest.fd, SIZE)
        how = guestproof.prove(guest.fd, st, guest.uffd.fileno(), guest.view.address, [SIZE],
                               PAGE_SIZE, pid=os.getpid())
        assert how == f"/proc/{os.getpid()}/maps"
        with pytest.raises(ProtocolError, match="from file offset"):  # described one page off
            guestproof.prove(guest.fd, st, guest.uffd.fileno(), guest.view.address + PAGE_SIZE,
                             [SIZE - PAGE_SIZE], PAGE_SIZE, pid=os.getpid())
    finally:
        guest.close()


def _mapped(address: int) -> bool:
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(address // PAGE_SIZE * 8)
        return bool(struct.unpack("<Q", f.read(8))[0] >> 63)


@pytest.fixture(params=[PAGE_SIZE, SIZE_2M], ids=["shmem", "hugetlb-2M"])
def page_size(request):
    if request.param == PAGE_SIZE:
        yield PAGE_SIZE
        return
    need = 2 * SIZE // SIZE_2M
    with pools.reserved(SIZE_2M, need) as got:
        if got < need:
            pytest.skip(f"the kernel gave {got} of {need} 2 MiB pages")
        yield SIZE_2M


def test_without_the_guests_pid_the_hole_proof_accepts_its_memfd_and_leaves_it_unmapped(
        page_size):
    """A guest in another pid namespace: proved through the userfaultfd alone."""
    guest = GuestMemory(SIZE, page_size)
    try:
        last = guest.view.address + SIZE - page_size
        how = guestproof.prove(guest.fd, os.fstat(guest.fd), guest.uffd.fileno(),
                               guest.view.address, [SIZE], page_size, pid=None)
        assert "hole" in how
        assert not _mapped(last)  # the page the proof installed was taken away again
        assert os.pread(guest.fd, PAGE_SIZE, SIZE - page_size) == bytes(PAGE_SIZE)
    finally:
        guest.close()


def test_without_the_guests_pid_the_hole_proof_refuses_another_memfd(page_size):
    guest = GuestMemory(SIZE, page_size)
    other = memfd("other", SIZE, page_size)
    try:
        fallocate(other, 0, SIZE)
        with pytest.raises(ProtocolError, match="maps another file"):
            guestproof.prove(other, os.fstat(other), guest.uffd.fileno(), guest.view.address,
                             [SIZE], page_size, pid=None)
    finally:
        os.close(other)
        guest.close()

"""The destination's side of the guest handshake, in-process: a real guest (its memfd and
userfaultfd, guest/memory.py) against dest/session.py's GuestSession on a UNIX socket. Every
refusal comes before any migration exists, with a message, and closes the descriptors the guest
sent; the destination's data plane itself is tested in test_dataplane.py."""

from __future__ import annotations

import os
import socket
import threading
from array import array
from pathlib import Path

import pytest

from cffi_uffd import PAGE_SIZE, SIZE_2M, HgmDetection, memfd
from migrator import unixmessages
from migrator.dest.backing import choose
from migrator.dest.daemon import DestDaemon
from migrator.dest.session import GuestSession
from migrator.errors import MigratorError
from migrator.guest.memory import GuestMemory
from migrator.guest.session import DestinationSession
from migrator.protocol.manifest import DATA, Manifest, Region

SIZE = 4 << 20
NO_HGM = HgmDetection(False, "madvise(MADV_SPLIT)", "EINVAL: this kernel has no HGM")


class Daemon:
    """What a GuestSession asks of its daemon up to the handshake's end (DestDaemon's own
    layout()); a migration being added means a refusal came too late."""

    def __init__(self, mode: str = "hgm") -> None:
        self.backing = choose(mode, SIZE_2M, NO_HGM)
        self.manifest = Manifest("img", [Region("ram", 0, SIZE)],
                                 array("Q", bytes(8 * (SIZE // PAGE_SIZE))),
                                 bytes([DATA]) * (SIZE // PAGE_SIZE))
        self.added: list = []

    layout = DestDaemon.layout

    def add(self, migration) -> None:
        self.added.append(migration)

    def left(self, session) -> None:
        pass


@pytest.fixture
def destination(tmp_path: Path):
    """A guest socket served by GuestSessions of a Daemon, one thread per guest."""
    path = str(tmp_path / "guest.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    daemon = Daemon()
    sessions: list[threading.Thread] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            t = threading.Thread(target=GuestSession(conn, daemon).run, daemon=True)
            t.start()
            sessions.append(t)

    threading.Thread(target=accept, daemon=True).start()
    yield path, daemon
    listener.close()
    for t in sessions:
        t.join(10)


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def _hello(path: str) -> tuple[socket.socket, dict]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(10)
    unixmessages.send(s, {"type": "hello", "version": 1, "vcpus": 1, "pid": os.getpid()})
    layout, _ = unixmessages.recv(s)
    return s, layout


def test_a_guest_is_told_the_layout_of_the_destinations_backing(destination):
    path, daemon = destination
    guest = DestinationSession(path, vcpus=2)
    try:
        assert guest.layout["type"] == "layout" and guest.layout["size"] == SIZE
        assert guest.layout["backing"] == "shmem-emulated-hgm"
        assert guest.layout["memory_page_size"] == guest.layout["granularity"] == PAGE_SIZE
        assert guest.layout["regions"] == [{"name": "ram", "offset": 0, "size": SIZE}]
    finally:
        guest.close()


def test_a_guest_of_another_protocol_version_is_refused_by_name(destination):
    path, daemon = destination
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.settimeout(10)
        unixmessages.send(s, {"type": "hello", "version": 2})
        reply, _ = unixmessages.recv(s)
    assert reply == {"type": "error",
                     "message": "guest speaks version 2, this destination speaks 1"}


def test_memory_handed_over_with_one_descriptor_is_refused_and_it_is_closed(destination):
    path, daemon = destination
    s, layout = _hello(path)
    fd = memfd("one", SIZE)
    before = _open_fds()
    with s:
        unixmessages.send(s, {"type": "memory", "regions": []}, fds=[fd])
        reply, _ = unixmessages.recv(s)
    os.close(fd)
    assert reply["type"] == "error" and "expected 2 file descriptors" in reply["message"]
    assert _open_fds() <= before and daemon.added == []


def test_a_memfd_smaller_than_the_image_is_refused_before_any_migration(destination):
    path, daemon = destination
    s, layout = _hello(path)
    guest = GuestMemory(SIZE, PAGE_SIZE)
    small = memfd("small", SIZE // 2)
    regions = guest.regions(layout["regions"])
    before = _open_fds()
    try:
        with s:
            unixmessages.send(s, {"type": "memory", "regions": regions},
                              fds=[guest.uffd.fileno(), small])
            reply, _ = unixmessages.recv(s)
    finally:
        os.close(small)
        guest.close()
    assert reply["type"] == "error"
    assert f"is {SIZE // 2} bytes, the layout is {SIZE}" in reply["message"]
    assert _open_fds() <= before and daemon.added == []


@pytest.mark.parametrize("change, words", [
    ({"page_size": SIZE_2M}, "does not match the layout's 4096"),
    ({"size": SIZE // 2}, "cover 2097152 bytes but the layout is 4194304"),
    ({"base_host_virt_addr": 4095}, "not contiguous and 4096-aligned"),
])
def test_regions_that_do_not_match_the_layout_are_refused_with_the_reason(destination, change,
                                                                          words):
    path, daemon = destination
    s, layout = _hello(path)
    guest = GuestMemory(SIZE, PAGE_SIZE)
    regions = [{**r, **change} for r in guest.regions(layout["regions"])]
    try:
        with s:
            unixmessages.send(s, {"type": "memory", "regions": regions},
                              fds=[guest.uffd.fileno(), guest.fd])
            reply, _ = unixmessages.recv(s)
    finally:
        guest.close()
    assert reply["type"] == "error" and words in reply["message"], reply
    assert daemon.added == []


def test_a_guest_whose_memory_cannot_be_allocated_gets_a_message_not_a_traceback():
    with pytest.raises(MigratorError, match="cannot allocate .* guest RAM"):
        GuestMemory(1 << 40, SIZE_2M)  # a TiB of 2 MiB pages: more than any pool here

"""The guest socket: guests that misbehave are refused with a message or reported; the
destination keeps serving the next guest."""

from __future__ import annotations

import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from array import array

from migrator.guest.touch import touch
from migrator import unixmessages
from migrator.guest.session import DestinationSession
from migrator.guest.memory import GuestMemory

from .conftest import run_guest


def _connect(dest) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(dest.socket)
    s.settimeout(10)
    return s


def _hello(s: socket.socket) -> dict:
    unixmessages.send(s, {"type": "hello", "version": 1, "vcpus": 1, "pid": os.getpid()})
    msg, _ = unixmessages.recv(s)
    assert msg["type"] == "layout"
    return msg


def _still_serves(dest) -> None:
    assert dest.alive()
    report = run_guest(dest, "--vcpus", "1", "--accesses", "200")
    assert report["migration"]["phase"] == "complete"


def test_guest_socket_is_owner_only(dest_factory):
    dest = dest_factory("hgm")
    assert stat.S_IMODE(os.stat(dest.socket).st_mode) == 0o600


def test_garbage_and_wrong_messages_are_refused_with_a_message(dest_factory):
    dest = dest_factory("hgm")
    with _connect(dest) as s:  # not even a length-prefixed message
        s.sendall(struct.pack("<I", 5) + b"\xff\xfe{{{")
        msg, _ = unixmessages.recv(s)
        assert msg["type"] == "error" and "not JSON" in msg["message"]
    with _connect(dest) as s:  # a huge length
        s.sendall(struct.pack("<I", 1 << 31))
        msg, _ = unixmessages.recv(s)
        assert msg["type"] == "error" and "exceeds" in msg["message"]
    with _connect(dest) as s:  # the wrong version
        unixmessages.send(s, {"type": "hello", "version": 99})
        msg, _ = unixmessages.recv(s)
        assert msg["type"] == "error" and "version" in msg["message"]
    with _connect(dest) as s:  # the wrong first message
        unixmessages.send(s, {"type": "memory"})
        msg, _ = unixmessages.recv(s)
        assert msg["type"] == "error" and "hello" in msg["message"]
    _still_serves(dest)


def test_wrong_fd_count_and_mismatched_regions_are_refused(dest_factory):
    dest = dest_factory("hgm")
    with _connect(dest) as s:
        layout = _hello(s)
        r, w = os.pipe()
        unixmessages.send(s, {"type": "memory", "regions": []}, fds=[r])
        os.close(r), os.close(w)
        msg, _ = unixmessages.recv(s)
        assert msg["type"] == "error" and "2 file descriptors" in msg["message"]
    with _connect(dest) as s:
        layout = _hello(s)
        memory = GuestMemory(layout["size"], layout["memory_page_size"])
        try:
            regions = memory.regions(layout["regions"])
            regions[0]["size"] //= 2  # does not cover the layout
            unixmessages.send(s, {"type": "memory", "regions": regions},
                          fds=[memory.uffd.fileno(), memory.fd])
            msg, _ = unixmessages.recv(s)
            assert msg["type"] == "error" and "cover" in msg["message"]
        finally:
            memory.close()
    with _connect(dest) as s:  # disconnect mid-handshake
        _hello(s)
    _still_serves(dest)


def test_guest_killed_mid_migration_is_reported_and_dest_survives(dest_factory):
    # Hold the background pull back so the migration is still running when the guest dies.
    dest = dest_factory("hgm", 2 << 20, "--background-delay", "30")
    guest = subprocess.Popen([sys.executable, "-m", "migrator.cli", "guest", "--dest-socket",
                              dest.socket, "--vcpus", "1", "--accesses", "100", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not dest.status()["migrations"]:
        assert time.monotonic() < deadline and guest.poll() is None
        time.sleep(0.05)
    session = dest.status()["migrations"][0]["session"]
    guest.send_signal(signal.SIGKILL)
    guest.wait()
    m = dest.wait_phase(session, ("guest-lost",))
    assert "guest disconnected" in m["error"]
    _still_serves(dest)


def test_many_vcpus_faulting_one_page_fetch_it_once(dest_factory):
    dest = dest_factory("hgm", 2 << 20, "--background-delay", "30")
    link = DestinationSession(dest.socket, 8)
    memory = GuestMemory(link.layout["size"], link.layout["memory_page_size"])
    try:
        link.hand_over(memory)
        page = 1234
        address = array("Q", [memory.view.address + page * 4096 + 64])
        barrier = threading.Barrier(8)
        tids: list[int] = []

        def vcpu() -> None:
            tids.append(threading.get_native_id())
            barrier.wait()
            touch(address)

        threads = [threading.Thread(target=vcpu) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        m = dest.migration(link.session)
        assert m["faults"] >= 1
        assert m["pages_urgent"] == 1  # one granule of 4 KiB, fetched and installed once
        assert m["fault_latency_seconds"]["count"] == m["faults"]
    finally:
        link.close()
        memory.close()

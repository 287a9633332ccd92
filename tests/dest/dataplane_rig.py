"""An in-process rig for the destination's C loops: a real userfaultfd over a real shmem memfd
(guest view registered MINOR, alias view), a manifest of a random image, and a source on the
other end of a local socket pair: the real C sender, or a scripted one that misbehaves on cue
(a wrong page, a cut mid-reply, a header that does not match its request, a held reply).
"""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
from array import array
from dataclasses import dataclass, field

from cffi_uffd import (SIZE_2M, Feature, Mapping, RegisterMode, Userfaultfd, advise_huge,
                       fallocate, memfd, populate)
from migrator.dest.dataplane import BackgroundPolicy, DataPlane
from migrator.guest.touch import touch
from migrator.protocol import PAGE_SIZE
from migrator.protocol.digest import digests
from migrator.protocol.frames import REPLY, REQUEST
from migrator.protocol.manifest import DATA, ZERO, Manifest, Region
from migrator.source.sender import PageSender
from migrator.source.served import Counters


def random_image(pages: int, zero_every: int = 4, seed: int = 1) -> tuple[bytes, bytes]:
    """Random page contents, every zero_every-th page all zero; returns (image, kinds)."""
    rng = random.Random(seed)
    image, kinds = bytearray(pages * PAGE_SIZE), bytearray(pages)
    for p in range(pages):
        if p % zero_every == zero_every - 1:
            kinds[p] = ZERO
        else:
            kinds[p] = DATA
            image[p * PAGE_SIZE:(p + 1) * PAGE_SIZE] = rng.randbytes(PAGE_SIZE)
    return bytes(image), bytes(kinds)


class ScriptedSource(threading.Thread):
    """Answers page requests from `image` like the real source, except where told:
    corrupt[page] = n: the first n replies carrying that page have it flipped;
    cut_after_bytes: close the connection after this many reply bytes;
    wrong_header: answer the first request with another request id;
    hold: a page (or pages) whose reply waits until its release is set (held and release:
    the first page's; holds[page]: each page's (held, release))."""

    def __init__(self, sock: socket.socket, image: bytes, *, corrupt: dict[int, int] | None = None,
                 cut_after_bytes: int | None = None, wrong_header: bool = False,
                 hold: int | tuple[int, ...] | None = None):
        super().__init__(daemon=True)
        self.sock, self.image = sock, image
        self.corrupt = dict(corrupt or {})
        self.cut_after_bytes, self.wrong_header = cut_after_bytes, wrong_header
        pages = () if hold is None else (hold,) if isinstance(hold, int) else hold
        self.holds = {p: (threading.Event(), threading.Event()) for p in pages}
        # the first held page's request has arrived / its reply may go
        self.held, self.release = self.holds[pages[0]] if pages else (threading.Event(),) * 2
        self.requests: list[tuple[int, int]] = []
        self.sent = 0
        self.start()

    def _recv_exactly(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def run(self) -> None:
        try:
            while (raw := self._recv_exactly(REQUEST.size)) is not None:
                request_id, offset, length = REQUEST.unpack(raw)
                self.requests.append((offset, length))
                body = bytearray(self.image[offset:offset + length])
                for page in range(offset // PAGE_SIZE, (offset + length) // PAGE_SIZE):
                    if self.corrupt.get(page, 0) > 0:
                        self.corrupt[page] -= 1
                        body[page * PAGE_SIZE - offset] ^= 0xFF
                    if page in self.holds:
                        held, release = self.holds[page]
                        held.set()
                        release.wait()
                if self.wrong_header:
                    self.wrong_header, request_id = False, request_id + 1000
                reply = REPLY.pack(request_id, 0, 0, offset, length) + bytes(body)
                if self.cut_after_bytes is not None and self.sent + len(reply) > self.cut_after_bytes:
                    self.sock.sendall(reply[:self.cut_after_bytes - self.sent])
                    self.sock.shutdown(socket.SHUT_RDWR)
                    return
                self.sock.sendall(reply)
                self.sent += len(reply)
        except OSError:
            pass
        finally:
            self.sock.close()


@dataclass
class Rig:
    """One guest's memory under a DataPlane, and the means to fault on it."""

    pages: int
    policy: BackgroundPolicy = field(default_factory=BackgroundPolicy)
    seed: int = 1
    thp: bool = False  # memory in 2 MiB THP folios, views 2 MiB aligned (the thp mode)

    def __post_init__(self) -> None:
        self.size = self.pages * PAGE_SIZE
        self.image, kinds = random_image(self.pages, seed=self.seed)
        self.manifest = Manifest("test-image", [Region("ram", 0, self.size)],
                                 digests(self.image), kinds)
        self.fd = memfd("dataplane-test", self.size)
        align = SIZE_2M if self.thp else 0
        self.guest = Mapping.shared(self.fd, self.size, align=align)
        self.alias = Mapping.shared(self.fd, self.size, align=align)
        if self.thp:  # huge folios come from a fault through a MADV_HUGEPAGE view
            advise_huge(self.alias.address, self.size)
            advise_huge(self.guest.address, self.size)
            populate(self.alias.address, self.size)
        else:
            fallocate(self.fd, 0, self.size)  # MINOR faults fire only for pages in the cache
        self.uffd = Userfaultfd()
        self.uffd.api(Feature.MINOR_SHMEM | Feature.EXACT_ADDRESS | Feature.THREAD_ID)
        self.uffd.register(self.guest.address, self.size, RegisterMode.MINOR)
        self.plane = DataPlane(self.manifest, PAGE_SIZE, self.alias, self.uffd.fileno(),
                               self.guest.address, self.policy)
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._senders: list[PageSender] = []  # they own their sockets
        self.results: dict[str, int] = {}

    # -- sources -------------------------------------------------------------------------------
    def pair(self) -> tuple[socket.socket, socket.socket]:
        ours, theirs = socket.socketpair()
        self._sockets.append(ours)
        return ours, theirs

    def real_source(self, sock: socket.socket) -> PageSender:
        sender = PageSender("test", sock.fileno(), memoryview(self.image), b"", [Counters()],
                            10.0)
        sock.detach()  # the sender owns it now
        self._senders.append(sender)
        sender.serve(lambda rc: None)
        return sender

    def loop_against(self, name: str, **script) -> tuple[ScriptedSource, threading.Thread]:
        """Run the fault or background loop against a scripted source (see ScriptedSource)."""
        ours, theirs = self.pair()
        source = ScriptedSource(theirs, self.image, **script)
        return source, self.run_loop(name, ours)

    def loop_against_real_source(self, name: str) -> threading.Thread:
        ours, theirs = self.pair()
        self.real_source(theirs)
        return self.run_loop(name, ours)

    # -- loops ---------------------------------------------------------------------------------
    def run_loop(self, name: str, sock: socket.socket) -> threading.Thread:
        """Run the fault or background loop over sock in a thread; its code lands in results."""
        body = self.plane.run_faults if name == "faults" else self.plane.run_background
        t = threading.Thread(target=lambda: self.results.__setitem__(name, body(sock.fileno())),
                             daemon=True)
        t.start()
        self._threads.append(t)
        return t

    # -- the guest -----------------------------------------------------------------------------
    def touch_pages(self, pages: list[int]) -> threading.Thread:
        """A vCPU reading one word of each page in turn, in C with the GIL released."""
        addresses = array("Q", (self.guest.address + p * PAGE_SIZE for p in pages))
        t = threading.Thread(target=touch, args=(addresses,), daemon=True)
        t.start()
        return t

    def guest_page(self, page: int) -> bytes:
        return bytes(self.guest.view[page * PAGE_SIZE:(page + 1) * PAGE_SIZE])

    def image_page(self, page: int) -> bytes:
        return self.image[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]

    def let_vcpus_go(self) -> None:
        """Stop the loops and close the userfaultfd: a vCPU still blocked on a fault wakes and
        reads whatever the page cache holds, as the range is no longer registered."""
        self.plane.stop()
        for t in self._threads:
            t.join(timeout=5)
        self.uffd.close()

    def close(self) -> None:
        if self.fd < 0:
            return
        self.let_vcpus_go()
        for sender in self._senders:
            sender.stop()
        stuck = [sender for sender in self._senders if not sender.join(5)]
        for s in self._sockets:
            s.close()
        self.plane.close()
        self.guest.close()
        self.alias.close()
        os.close(self.fd)
        self.fd = -1
        assert not stuck, f"{len(stuck)} source sender(s) did not stop"


def word(data: bytes, offset: int = 0) -> int:
    return struct.unpack_from("<Q", data, offset)[0]

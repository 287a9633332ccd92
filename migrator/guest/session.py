"""The guest's session with the destination on its UNIX socket (messages: protocol/guest.py;
the destination's side is dest/session.py)."""

from __future__ import annotations

import base64
import os
import socket
from array import array

from .. import unixmessages
from ..errors import MigratorError
from ..protocol.guest import VERSION, expect
from .memory import GuestMemory


class DestinationSession:
    def __init__(self, socket_path: str, vcpus: int):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(socket_path)
        except OSError as e:
            self.sock.close()
            raise MigratorError(f"cannot connect to the destination at {socket_path}: {e.strerror}; "
                             "is `migrator dest --guest-socket` running there?") from e
        unixmessages.send(self.sock, {"type": "hello", "version": VERSION, "vcpus": vcpus,
                                  "pid": os.getpid()})
        self.layout = self.receive("layout")
        self.session: str | None = None

    def receive(self, kind: str) -> dict:
        msg, _ = unixmessages.recv(self.sock)
        return expect(msg, kind)

    def send(self, message: dict) -> None:
        unixmessages.send(self.sock, message)

    def hand_over(self, memory: GuestMemory) -> None:
        """Switchover: give the destination our userfaultfd and RAM; it is ready to resolve."""
        message = {"type": "memory", "regions": memory.regions(self.layout["regions"])}
        if memory.thp is not None:
            message["thp"] = memory.thp
        unixmessages.send(self.sock, message, fds=[memory.uffd.fileno(), memory.fd])
        self.session = self.receive("ready").get("session")

    def announce_vcpus(self, thread_ids: list[int]) -> None:
        self.send({"type": "vcpus", "thread_ids": thread_ids})

    def wait_complete(self, timeout: float) -> dict:
        self.sock.settimeout(timeout)
        try:
            return self.receive("complete")
        finally:
            self.sock.settimeout(None)

    def digests(self, pages: list[int]) -> list[int]:
        self.send({"type": "digests", "pages": pages})
        return self.receive("digests")["digests"]

    def digest_range(self, first: int, count: int) -> array:
        """The manifest's digests of pages [first, first + count)."""
        self.send({"type": "digests", "first": first, "count": count})
        reply = self.receive("digests")
        return array("Q", base64.b64decode(reply["xxh3_64_le"]))

    def close(self, say_bye: bool = True) -> None:
        if say_bye:
            try:
                self.send({"type": "bye"})
            except OSError:
                pass
        self.sock.close()

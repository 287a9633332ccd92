"""The conversation with one guest on the UNIX socket (see protocol/guest.py for the messages)."""

from __future__ import annotations

import base64
import logging
import os
import sys
from array import array
import socket
import struct
import threading
import time
import uuid
from typing import Callable

from .. import metrics, unixmessages
from ..protocol.errors import ProtocolError
from ..protocol.guest import MAX_DIGEST_PAGES, MAX_DIGEST_RANGE, VERSION, check_regions, expect
from . import guestproof
from .migration import ACTIVE, Migration

log = logging.getLogger("migrator.dest")

_HANDSHAKE_TIMEOUT_S = 30.0


class GuestSession:
    def __init__(self, conn: socket.socket, daemon) -> None:
        self.conn, self.daemon = conn, daemon
        self.id = uuid.uuid4().hex[:12]
        self.migration: Migration | None = None
        self._send_lock = threading.Lock()

    def _send(self, message: dict, fds: list[int] | None = None) -> None:
        with self._send_lock:
            unixmessages.send(self.conn, message, fds)

    def run(self) -> None:
        try:
            self._handshake()
            self._converse()
        except (ProtocolError, ValueError) as e:
            if self.migration is None:
                log.warning("guest %s refused: %s", self.id, e)
            else:
                log.warning("guest %s broke the protocol: %s", self.id, e)
                self.migration.fail(f"the guest broke the protocol: {e}", phase="guest-error")
            self._try_send({"type": "error", "message": str(e)})
        except (ConnectionError, OSError) as e:
            if self.migration is None:
                log.warning("guest %s: handshake ended: %s", self.id, e)
                self._try_send({"type": "error", "message": f"the destination could not take "
                                f"the guest's memory: {e}"})
            elif self.migration.phase in ACTIVE:
                log.warning("guest %s exited mid-migration (%s)", self.id, e)
                self.migration.fail(f"guest disconnected mid-migration: {e}", phase="guest-lost")
        finally:
            self.conn.close()
            if self.migration:
                self.migration.close()
            self.daemon.left(self)

    def _peer_pid(self) -> int | None:
        """The guest's process, as the kernel says (SO_PEERCRED), not as it says itself."""
        try:
            creds = self.conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                         struct.calcsize("3i"))
        except OSError:
            return None
        pid = struct.unpack("3i", creds)[0]
        return pid or None

    def _try_send(self, message: dict) -> None:
        try:
            self._send(message)
        except OSError:
            pass

    def _handshake(self) -> None:
        self.conn.settimeout(_HANDSHAKE_TIMEOUT_S)
        msg, _ = unixmessages.recv(self.conn)
        hello = expect(msg, "hello")
        if hello.get("version") != VERSION:
            raise ProtocolError(f"guest speaks version {hello.get('version')!r}, this "
                                f"destination speaks {VERSION}")
        self._send(self.daemon.layout())
        msg, fds = unixmessages.recv(self.conn, expect_fds=2)
        try:
            memory = expect(msg, "memory")
            if len(fds) != 2:
                raise ProtocolError(f"expected 2 file descriptors (userfaultfd, memfd), got {len(fds)}")
            manifest = self.daemon.manifest
            regions = check_regions(memory.get("regions"), manifest.size,
                                    self.daemon.backing.memory_page_size)
            base = int(regions[0]["base_host_virt_addr"])
            for r in regions:
                if int(r["base_host_virt_addr"]) != base + int(r["offset"]):
                    raise ProtocolError("regions must be mapped contiguously, in offset order")
            st = guestproof.check_memfd(fds[1], manifest.size)
            thp = memory.get("thp")
            if thp is not None and not isinstance(thp, dict):
                raise ProtocolError("'thp' must be an object")
            pid = self._peer_pid()
            ends = [int(r["offset"]) + int(r["size"]) for r in regions]
            how = guestproof.prove(fds[1], st, fds[0], base, ends,
                                   self.daemon.backing.memory_page_size, pid)
            log.info("guest %s (pid %s): its registered range maps the memfd handed over "
                     "(proved by %s)", self.id, pid or "not visible here", how)
            try:
                self.migration = Migration(self.id, manifest, self.daemon.backing,
                                           self.daemon.source, fds[0], fds[1], base,
                                           self.daemon.policy, self.daemon.resume_deadline,
                                           pid, thp)
            except OSError as e:
                if isinstance(e, ConnectionError):
                    raise
                raise ProtocolError(f"cannot use the guest's memory: {e}") from e
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        self.daemon.add(self.migration)
        self.migration.start()
        self.conn.settimeout(None)
        self._send({"type": "ready", "session": self.id})
        threading.Thread(target=self._announce_completion, daemon=True).start()

    def _announce_completion(self) -> None:
        self.migration.done.wait()
        self._try_send({"type": "complete", **self.migration.status()})

    def _converse(self) -> None:
        handlers: dict[str, Callable[[dict], None]] = {
            "stalls": self._on_stalls, "verify": self._on_guest_result, "digests": self._on_digests,
            "vcpus": self._on_vcpus,
        }
        while True:
            msg, _ = unixmessages.recv(self.conn)
            if not isinstance(msg, dict) or "type" not in msg:
                raise ProtocolError("messages must be JSON objects with a 'type'")
            if msg["type"] == "bye":
                if self.migration.phase in ACTIVE:
                    raise ProtocolError(f"'bye' while the migration is {self.migration.phase}: "
                                        f"say bye once the destination sent 'complete'")
                return
            if msg["type"] == "memory":
                raise ProtocolError("a second 'memory' message: the guest's memory was handed "
                                    "over already")
            handler = handlers.get(msg["type"])
            if handler is None:
                raise ProtocolError(f"unknown message type {msg['type']!r}: after 'ready' a "
                                    f"guest sends {', '.join(sorted(handlers))} or 'bye'")
            handler(msg)

    def _on_guest_result(self, msg: dict) -> None:
        self.migration.guest_results[msg["type"]] = {k: v for k, v in msg.items() if k != "type"}
        self.daemon.guest_reported(self.migration, msg)

    def _on_vcpus(self, msg: dict) -> None:
        tids = msg.get("thread_ids")
        if not isinstance(tids, list) or not all(isinstance(t, int) for t in tids):
            raise ProtocolError("'thread_ids' must be a list of integers")
        self.migration.telemetry.vcpu_tids.update(tids)
        if self.migration.vcpus_started is None:  # announced as they start touching memory
            self.migration.vcpus_started = time.monotonic()
        self.migration.plane.set_vcpus(len(self.migration.telemetry.vcpu_tids))
        for vcpu in range(len(tids)):  # at zero now, so rate() sees the stalls when they come
            metrics.VCPU_BLOCKTIME.labels(*self.migration.backing.metric_labels, str(vcpu))

    def _on_stalls(self, msg: dict) -> None:
        samples, vcpus = msg.get("samples_ns"), msg.get("vcpus")
        if (not isinstance(samples, list) or not all(isinstance(t, int) for t in samples)
                or not isinstance(vcpus, list) or not all(isinstance(v, dict) for v in vcpus)):
            raise ProtocolError("'stalls' needs samples_ns (integers) and vcpus (objects)")
        mode, backing = self.migration.backing.mode, self.migration.backing.backing
        stall = metrics.VCPU_STALL.labels(mode, backing)
        for t in samples:
            stall.observe(t / 1e9)
        self.migration.stall_samples = [t / 1e9 for t in samples]
        events = msg.get("events", [])
        if not isinstance(events, list) or not all(
                isinstance(e, list) and len(e) == 3 and all(isinstance(x, int) for x in e)
                for e in events):
            raise ProtocolError("'events' must be a list of [page, start_ns, stall_ns] integers")
        self.migration.telemetry.observe_stalls(events)
        sigbus = msg.get("sigbus", 0)
        if isinstance(sigbus, int) and sigbus > 0:
            metrics.GUEST_SIGBUS.labels(mode, backing).inc(sigbus)
        for v in vcpus:
            metrics.VCPU_BLOCKTIME.labels(mode, backing, str(v.get("vcpu"))).inc(float(v.get("total", 0)))
        self._on_guest_result({k: v for k, v in msg.items() if k not in ("samples_ns", "events")})

    def _on_digests(self, msg: dict) -> None:
        digests = self.daemon.manifest.digests
        if "first" in msg:
            first, count = msg.get("first"), msg.get("count")
            if (type(first) is not int or type(count) is not int or first < 0
                    or not 0 < count <= MAX_DIGEST_RANGE or first + count > len(digests)):
                raise ProtocolError(f"'first' and 'count' must be integers with 0 < count <= "
                                    f"{MAX_DIGEST_RANGE} and first + count <= {len(digests)}")
            raw = memoryview(digests)[first:first + count].tobytes()
            if sys.byteorder != "little":
                swapped = array("Q", raw)
                swapped.byteswap()
                raw = swapped.tobytes()
            self._send({"type": "digests", "first": first,
                        "xxh3_64_le": base64.b64encode(raw).decode()})
            return
        pages = msg.get("pages")
        if (not isinstance(pages, list) or len(pages) > MAX_DIGEST_PAGES
                or not all(isinstance(p, int) and 0 <= p < len(digests) for p in pages)):
            raise ProtocolError(f"'pages' must be a list of at most {MAX_DIGEST_PAGES} page "
                                f"indices below {len(digests)}")
        self._send({"type": "digests", "digests": [digests[p] for p in pages]})

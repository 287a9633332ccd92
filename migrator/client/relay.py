"""TLS for the C loops, which speak plain sockets: a local socket pair, one end for the loop,
the other relayed to and from the TLS connection by one thread.

One thread, non-blocking both ways: an OpenSSL connection must not be read and written from
two threads at once, and blocking on either direction could deadlock against a peer that is
itself blocked writing to us.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import threading

_CHUNK = 256 << 10
_LIMIT = 4 << 20  # bytes buffered one way before we stop reading that way


class TLSRelay:
    def __init__(self, tls: ssl.SSLSocket):
        self._tls = tls
        self._plain, self._inner = socket.socketpair()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tls-relay")
        self._thread.start()

    def fileno(self) -> int:
        """The plain end, for the C loop."""
        return self._plain.fileno()

    def _run(self) -> None:
        tls, inner = self._tls, self._inner
        tls.setblocking(False)
        inner.setblocking(False)
        to_tls, to_inner = bytearray(), bytearray()
        sel = selectors.DefaultSelector()
        sel.register(tls, selectors.EVENT_READ)
        sel.register(inner, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                if len(to_inner) < _LIMIT and not _move(tls.recv, to_inner):
                    break
                if len(to_tls) < _LIMIT and not _move(inner.recv, to_tls):
                    break
                _flush(tls.send, to_tls)
                _flush(inner.send, to_inner)
                for s, pending, source_full in ((tls, to_tls, len(to_inner) >= _LIMIT),
                                                (inner, to_inner, len(to_tls) >= _LIMIT)):
                    mask = (0 if source_full else selectors.EVENT_READ) | (
                        selectors.EVENT_WRITE if pending else 0)
                    sel.modify(s, mask or selectors.EVENT_READ)
                sel.select(0.2)
        except (OSError, ValueError):
            pass
        finally:
            sel.close()
            # either side gone: end both, so the loop sees the link break
            try:
                inner.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._inner.close()
        self._plain.close()


def _move(recv, into: bytearray) -> bool:
    """Read what is there into `into`; False when the peer closed."""
    while len(into) < _LIMIT:
        try:
            data = recv(_CHUNK)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return True
        if not data:
            return False
        into += data
    return True


def _flush(send, pending: bytearray) -> None:
    while pending:
        try:
            n = send(pending)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return
        del pending[:n]

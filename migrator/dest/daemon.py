"""The destination daemon: accepts guests on a UNIX socket, serves status over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import ssl
import threading
import time

from aiohttp import web

from .. import metrics, unixmessages
from ..errors import MigratorError
from ..host import hgm
from ..webauth import refuse_bodies, require_token
from ..client.errors import SourceTLSError, Unauthorized
from ..client.http import fetch_manifest
from ..protocol.manifest import Manifest
from . import dashboard
from .backing import Backing, choose
from .dataplane import BackgroundPolicy
from .migration import PHASES, Migration, SourceEndpoint
from .session import GuestSession

log = logging.getLogger("migrator.dest")

_MANIFEST_RETRY_S = (0.2, 0.5, 1, 2, 5)
PUBLIC_PATHS = ("/healthz", "/", "/dashboard")
# Also how long a client may take to send a request head (slowloris).
KEEPALIVE_TIMEOUT = 10.0


MAX_GUESTS = 64  # guest connections served at once (each holds a thread and a migration)


class DestDaemon:
    def __init__(self, source: SourceEndpoint, mode: str, hugepage_size: int, guest_socket: str,
                 manifest_deadline: float = 60.0, policy: BackgroundPolicy = BackgroundPolicy(),
                 resume_deadline: float = 60.0, max_guests: int = MAX_GUESTS):
        self.max_guests = max_guests
        self.guests: set[GuestSession] = set()
        self.source, self.guest_socket_path = source, guest_socket
        self.policy, self.resume_deadline = policy, resume_deadline
        self.hgm = hgm.detect(hugepage_size)
        self.backing: Backing = choose(mode, hugepage_size, self.hgm)
        metrics.start_dest_series(mode, self.backing.backing, PHASES)
        self.manifest = self._fetch_manifest(manifest_deadline)
        # Only memory made of huge pages must be a whole number of them: hgm emulated on
        # shmem has 4 KiB pages whatever --hugepage-size says, thp 2 MiB folios.
        align = max(self.backing.memory_page_size, self.backing.collapse_size)
        if self.manifest.size % align:
            raise MigratorError(f"the image is {self.manifest.size} bytes, not a multiple of the "
                                f"{align}-byte huge page of {self.backing.backing}; use "
                                f"--hugepage-size 2M or another image")
        self.migrations: list[Migration] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    def _fetch_manifest(self, deadline: float) -> Manifest:
        end = time.monotonic() + deadline
        for attempt in range(1_000_000):
            try:
                return fetch_manifest(self.source.url, self.source.token,
                                      ssl_context=self.source.ssl_context)
            except SourceTLSError as e:  # retrying would not help
                raise MigratorError(f"cannot fetch the manifest from {self.source.url}: "
                                    f"{e}") from None
            except Unauthorized as e:
                raise MigratorError(f"the source at {self.source.url} refused our token: "
                                    f"{e}") from e
            except ConnectionError as e:
                if time.monotonic() > end:
                    raise MigratorError(f"cannot fetch the manifest from {self.source.url}: {e}")
                time.sleep(_MANIFEST_RETRY_S[min(attempt, len(_MANIFEST_RETRY_S) - 1)])
        raise AssertionError("unreachable")

    # -- what guests are told -------------------------------------------------------------------
    def layout(self) -> dict:
        b, m = self.backing, self.manifest
        return {
            "type": "layout", "mode": b.mode, "backing": b.backing, "backing_label": b.label,
            "memory_page_size": b.memory_page_size, "granularity": b.granularity,
            "hugepage_size": b.hugepage_size, "thp_folio": b.collapse_size, "size": m.size, "image_id": m.image_id,
            "regions": [{"name": r.name, "offset": r.offset, "size": r.size} for r in m.regions],
        }

    def add(self, migration: Migration) -> None:
        with self._lock:
            self.migrations.append(migration)
        log.info("guest session %s: migration started (%s, %d pages)", migration.session,
                 self.backing.label, self.manifest.pages)

    def left(self, session: GuestSession) -> None:
        with self._lock:
            self.guests.discard(session)

    def guest_reported(self, migration: Migration, message: dict) -> None:
        log.info("guest session %s reported %s", migration.session, message.get("type"))

    def status(self) -> dict:
        with self._lock:
            migrations = [m.status() for m in self.migrations]
        return {
            "backing": self.backing.as_dict(),
            "hgm_detection": self.hgm.as_dict(),
            "source": self.source.url,
            "image_id": self.manifest.image_id,
            "pages_total": self.manifest.pages,
            "migrations": migrations,
        }

    # -- guest socket ---------------------------------------------------------------------------
    def listen_guests(self) -> None:
        path = self.guest_socket_path
        if os.path.exists(path):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # owner-only: whoever connects can hand us its memory
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(16)
        self._sock = sock
        threading.Thread(target=self._accept_loop, name="guest-accept", daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            session = GuestSession(conn, self)
            with self._lock:
                full = len(self.guests) >= self.max_guests
                if not full:
                    self.guests.add(session)
            if full:
                self._turn_away(conn)
                continue
            threading.Thread(target=session.run, name=f"guest-{session.id}", daemon=True).start()

    def _turn_away(self, conn: socket.socket) -> None:
        message = (f"this destination serves at most {self.max_guests} guests at once "
                   f"(--max-guests) and has {self.max_guests} connected: retry when one has left, "
                   f"or start it with a higher --max-guests")
        log.warning("guest connection refused: %s", message)
        try:
            conn.settimeout(1.0)  # a guest that does not read must not hold the accept loop
            unixmessages.send(conn, {"type": "error", "message": message})
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        if self._sock:
            self._sock.close()
            try:
                os.unlink(self.guest_socket_path)
            except FileNotFoundError:
                pass


def build_app(daemon: DestDaemon) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def status(_: web.Request) -> web.Response:
        return web.json_response(daemon.status())

    async def prometheus(request: web.Request) -> web.Response:
        body, content_type = metrics.exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def poison(request: web.Request) -> web.Response:
        """POST /v1/migrations/{session}/poison {"page": N}: a memory error on this host."""
        session = request.match_info["session"]
        migration = next((m for m in list(daemon.migrations) if m.session == session), None)
        if migration is None:
            raise web.HTTPNotFound(text=f"no migration {session!r}; see /v1/status\n")
        try:
            # json.loads detects UTF-8/16/32 itself; request.json() would trust the charset.
            body = json.loads(await request.read())
            page = body["page"]
            if not isinstance(page, int) or isinstance(page, bool):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError):
            raise web.HTTPBadRequest(text='send a JSON object {"page": N}, N a 4 KiB page index\n')
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                None, migration.inject_poison, page)
        except BlockingIOError as e:
            raise web.HTTPConflict(text=f"{e}\n")
        except ValueError as e:
            raise web.HTTPBadRequest(text=f"{e}\n")
        return web.json_response(result)

    # The dashboard page itself holds no data (it asks /v1/... with the token), so it is public
    # like /healthz.
    app = web.Application(middlewares=[require_token(daemon.source.token, PUBLIC_PATHS),
                                       refuse_bodies(accepting=("POST",))],
                          client_max_size=64 << 10)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/migrations/{session}/poison", poison)
    dashboard.add_routes(app, daemon)
    return app


def serve(daemon: DestDaemon, host: str, port: int,
          ssl_context: ssl.SSLContext | None = None) -> None:
    """Serve HTTP (HTTPS with ssl_context) until a signal; guests connect to the UNIX socket."""
    daemon.listen_guests()
    b = daemon.backing
    log.info("destination on %s://%s:%d, guests on %s, mode %s (%s), granularity %d, hgm "
             "detection: %s, source %s", "https" if ssl_context else "http", host, port,
             daemon.guest_socket_path, b.mode, b.label, b.granularity, daemon.hgm.detail,
             daemon.source.url)
    try:
        web.run_app(build_app(daemon), host=host, port=port, print=None, handle_signals=True,
                    ssl_context=ssl_context, keepalive_timeout=KEEPALIVE_TIMEOUT)
    finally:
        daemon.close()

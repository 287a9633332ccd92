"""A page stream that survives the source going away: pause, reconnect with backoff, resume.

In postcopy the guest's state is split across two hosts, so a broken link must not lose the
guest. While reconnecting, vCPUs stay blocked on their unresolved faults (nothing is installed
that was not verified), and whatever was in flight is requested again on the new connection.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .. import metrics
from ..client.errors import SourceRefused, StreamBroken, Unauthorized, reason
from ..client.http import fetch_manifest
from ..client.stream import PageStream
from .dataplane import LINK
from .errors import MigrationFailed

log = logging.getLogger("migrator.dest")

BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
# What a broken link looks like from a blocking socket: reset, closed, timed out, refused.
# (Not OSError at large: a failed userfaultfd ioctl is an OSError too, and is no link problem.)
TRANSIENT = (ConnectionError, TimeoutError)


@dataclass
class Recovery:
    stream: str
    cause: str
    seconds: float
    attempts: int


@dataclass
class SourceStream:
    """One named stream (urgent or background) of one migration, reconnecting as needed."""

    link: object  # migration.SourceEndpoint
    name: str
    session: str
    image_id: str
    deadline: float  # seconds a reconnect may take before the migration fails
    labels: tuple[str, str]  # (mode, backing) of its metrics
    on_pause: Callable[[str], None]
    on_resume: Callable[[Recovery], None]
    stop: threading.Event
    stream: PageStream | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.stream = self.link.open(self.name, self.session)

    def run(self, loop: Callable[[int], int]) -> int:
        """Run a C loop over this stream's connection until it ends other than by a broken
        link; after each break, reconnect (or fail after the deadline) and run it again."""
        while True:
            rc = loop(self.stream.handover())
            if rc != LINK:
                return rc
            if self.stop.is_set():
                return rc
            self.reconnect(StreamBroken(f"the {self.name} stream to {self.link.url} broke",
                                        url=self.link.url))

    def reconnect(self, error: BaseException) -> PageStream:
        """Replace the broken connection; raise MigrationFailed after `deadline` seconds."""
        if isinstance(error, (Unauthorized,)) or (isinstance(error, SourceRefused)
                                                   and error.status < 500):
            raise MigrationFailed(f"the source refused the {self.name} stream: {error}")
        cause = reason(error)
        self.on_pause(self.name)
        log.warning("%s stream of %s broke (%s); reconnecting", self.name, self.session, cause)
        metrics.RETRIES.labels(*self.labels, "reconnect").inc()
        self.close()
        started = time.monotonic()
        for attempt in range(1, 1_000_000):
            if self.stop.is_set():
                raise MigrationFailed("stopped while reconnecting")
            try:
                self._check_same_image()
                self.stream = self.link.open(self.name, self.session)
                break
            except MigrationFailed:
                raise
            except TRANSIENT as e:
                waited = time.monotonic() - started
                if waited > self.deadline:
                    metrics.ERRORS.labels(*self.labels, "source_lost").inc()
                    raise MigrationFailed(
                        f"the source did not come back within {self.deadline:.0f}s "
                        f"({attempt} attempts; last: {reason(e)}); raise --resume-deadline or "
                        f"restart the source from the same image") from e
                self.stop.wait(BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)])
        recovery = Recovery(self.name, cause, time.monotonic() - started, attempt)
        log.info("%s stream of %s resumed after %.2fs (%d attempts)", self.name, self.session,
                 recovery.seconds, attempt)
        self.on_resume(recovery)
        return self.stream

    def _check_same_image(self) -> None:
        """A source restarted from another image must not feed this migration."""
        manifest = fetch_manifest(self.link.url, self.link.token, timeout=5,
                                  ssl_context=self.link.ssl_context)
        if manifest.image_id != self.image_id:
            raise MigrationFailed(f"the source came back serving image {manifest.image_id!r}, "
                                  f"not {self.image_id!r}: restart it from the same image")

    def close(self) -> None:
        if self.stream is not None:
            try:
                self.stream.close()
            except OSError:
                pass
            self.stream = None

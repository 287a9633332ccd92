"""The background puller: fills every granule nobody faulted on, so the migration completes.

It continues just after the most recent fault (pages after a faulting page are likely next),
and it yields to urgent work: before each chunk it waits (briefly) for the urgent stream to go idle.
"""

from __future__ import annotations

import threading
import time

from ..client.stream import PageStream
from .installer import Installer, StreamCounters
from .pages import PageTable
from .reconnect import TRANSIENT, SourceStream
from .resolver import FaultResolver

CHUNK_BYTES = 4 << 20
_YIELD_S = 0.002


class BackgroundPuller:
    def __init__(self, installer: Installer, table: PageTable, source: SourceStream,
                 resolver: FaultResolver, stop: threading.Event, delay: float = 0.0):
        self.installer, self.table, self.source = installer, table, source
        self.resolver, self.stop, self.delay = resolver, stop, delay
        self.counters = StreamCounters(resolver.counters.mode, "background", resolver.counters.backing)
        self.started: float | None = None
        self.finished: float | None = None
        self.granules_per_chunk = max(1, CHUNK_BYTES // installer.granularity)

    def run(self) -> None:
        if self.stop.wait(self.delay):
            return
        self.started = time.perf_counter()
        try:
            self._pull()
        finally:
            self.finished = time.perf_counter()

    def throughput(self) -> float:
        """Bytes per second that the puller moved while it ran."""
        if self.started is None:
            return 0.0
        elapsed = (self.finished or time.perf_counter()) - self.started
        return self.counters.bytes / elapsed if elapsed > 0 else 0.0

    def _pull(self) -> None:
        while not self.stop.is_set():
            claims: list[tuple[int, int, list]] = []
            try:
                self._pull_over(self.source.stream, claims)
                return
            except TRANSIENT as e:
                self._release(claims)
                self.source.reconnect(e)
            except BaseException:
                self._release(claims)
                raise

    def _pull_over(self, stream: PageStream, claims: list) -> None:
        # One chunk stays requested ahead of the one being received, so the source is never
        # idle while this thread verifies and installs. `claims` holds what is claimed and
        # not yet installed, for release if the link breaks.
        while not self.stop.is_set():
            self.resolver.urgent_idle.wait(_YIELD_S)
            ahead = self._request_next(stream)
            if ahead is not None:
                claims.append(ahead)
            if len(claims) > 1 or (claims and ahead is None):
                first, end, runs = claims[0]
                self.installer.finish(stream, first, end, runs, self.counters)
                claims.pop(0)
                self.resolver.installed(first, end)
            if not claims:
                return

    def _release(self, claims: list) -> None:
        for first, end, _ in claims:
            self.table.release(first, end)

    def _request_next(self, stream: PageStream) -> tuple[int, int, list] | None:
        claimed = self.table.claim_run(self.granules_per_chunk)
        if claimed is None:
            return None
        first, end = claimed
        runs = self.installer.data_runs(*self.installer.byte_range(first, end))
        try:
            self.installer.request(stream, runs)
        except BaseException:
            self.table.release(first, end)  # not in the caller's claims yet
            raise
        return first, end, runs

"""The background puller: fills every granule nobody faulted on, so the migration completes.

It continues just after the most recent fault (pages after a faulting page are likely next),
and it yields to urgent work: before each chunk it waits (briefly) for the urgent stream to go idle.
"""

from __future__ import annotations

import threading
import time

from ..client.stream import PageStream
from .installer import Installer, StreamCounters
from .pages import PRESENT, PageTable
from .resolver import FaultResolver

CHUNK_BYTES = 4 << 20
_YIELD_S = 0.002


class BackgroundPuller:
    def __init__(self, installer: Installer, table: PageTable, stream: PageStream,
                 resolver: FaultResolver, stop: threading.Event, delay: float = 0.0):
        self.installer, self.table, self.stream = installer, table, stream
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
        # One chunk stays requested ahead of the one being received, so the source is never
        # idle while this thread verifies and installs.
        pending: tuple[int, int, list] | None = None
        try:
            while not self.stop.is_set():
                self.resolver.urgent_idle.wait(_YIELD_S)
                ahead = self._request_next()
                if pending is not None:
                    self.installer.finish(self.stream, *pending, self.counters)
                    self.resolver.installed_by_puller(pending[0], pending[1])
                pending = ahead
                if pending is None:
                    return
        except BaseException:
            for claimed in (pending, locals().get("ahead")):
                if claimed is not None and self.table.state[claimed[0]] != PRESENT:
                    self.table.release(claimed[0], claimed[1])
            raise

    def _request_next(self) -> tuple[int, int, list] | None:
        claimed = self.table.claim_run(self.granules_per_chunk)
        if claimed is None:
            return None
        first, end = claimed
        runs = self.installer.data_runs(*self.installer.byte_range(first, end))
        self.installer.request(self.stream, runs)
        return first, end, runs

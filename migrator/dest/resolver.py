"""The fault loop: read userfaultfd events in batches, resolve each granule once, urgently.

Per batch: mask each exact fault address to the mode's granularity, drop duplicates (several
vCPUs on one page are one request), claim absent granules, pipeline their requests on the
urgent stream, then verify and install each as its data arrives so the first vCPU wakes first.
"""

from __future__ import annotations

import threading
import time

from cffi_uffd import PageExists, PageFault, Userfaultfd

from .. import metrics
from .installer import Installer, MigrationFailed, StreamCounters
from .pages import ABSENT, CLAIMED, POISONED, PRESENT, PageTable
from .reconnect import TRANSIENT, SourceStream

_POLL_S = 0.05


class FaultResolver:
    def __init__(self, uffd: Userfaultfd, installer: Installer, table: PageTable,
                 source: SourceStream, guest_base: int, size: int, stop: threading.Event,
                 mode: str, backing: str):
        self.uffd, self.installer, self.table, self.source = uffd, installer, table, source
        self.guest_base, self.size, self.stop = guest_base, size, stop
        self.counters = StreamCounters(mode, "urgent", backing)
        self.vcpu_tids: set[int] = set()  # the guest's vCPU threads, as it told us
        self._faults = {kind: metrics.FAULTS.labels(mode, backing, kind) for kind in ("vcpu", "other")}
        self._in_flight = metrics.URGENT_IN_FLIGHT.labels(mode)
        self.faults = 0
        self.faults_by_thread: dict[int, int] = {}
        self.waited_on_background = 0  # faults on a granule the puller was installing
        self.urgent_idle = threading.Event()
        self.urgent_idle.set()
        # faults waiting on a granule the puller has claimed: granule -> [read time]
        self.waiting: dict[int, list[float]] = {}
        self.waiting_lock = threading.Lock()

    def run(self) -> None:
        granularity = self.installer.granularity
        while not self.stop.is_set():
            events = self.uffd.read_events(timeout=_POLL_S)
            if not events:
                continue
            now = time.perf_counter()
            wanted: dict[int, int] = {}  # granule -> faults on it in this batch
            missing: set[int] = set()  # granules with a MISSING (not MINOR) fault
            for ev in events:
                if isinstance(ev, PageFault):
                    offset = ev.address - self.guest_base
                    if not 0 <= offset < self.size:
                        continue  # not guest memory we serve
                    granule = offset // granularity
                    wanted[granule] = wanted.get(granule, 0) + 1
                    if not ev.minor:
                        missing.add(granule)
                    self.faults += 1
                    self.faults_by_thread[ev.thread_id] = self.faults_by_thread.get(ev.thread_id, 0) + 1
                    self._faults["vcpu" if ev.thread_id in self.vcpu_tids else "other"].inc()
                # Remove/Unmap: the page cache keeps the data; a re-fault is re-installed.
            self._resolve(wanted, missing, now)

    def _resolve(self, wanted: dict[int, int], missing: set[int], read_at: float) -> None:
        mine: list[int] = []
        for granule, count in wanted.items():
            state = self.table.claim(granule)
            if state == POISONED:
                self.installer.poison(granule, self.counters)
                self.counters.resolved(time.perf_counter() - read_at, count)
                continue
            if granule in missing:
                # Only a hole in the memfd's page cache faults MISSING here (the guest
                # allocated all of it): CONTINUE cannot fill a hole, and a guessed page must
                # never be installed.
                raise MigrationFailed(
                    f"a fault at guest offset {granule * self.installer.granularity:#x} hit a "
                    "hole in the guest's memory file: the guest must allocate (fallocate) all "
                    "of its RAM before handing it over")
            if state == ABSENT:
                mine.append(granule)
                self.table.fault_at(granule)
            elif state == CLAIMED:
                self.waited_on_background += count
                with self.waiting_lock:
                    self.waiting.setdefault(granule, []).extend([read_at] * count)
                if self.table.state[granule] in (PRESENT, POISONED):  # the puller finished
                    self.installed(granule, granule + 1)
            elif state == PRESENT:
                # Installed after this fault was queued, or zapped since (MADV_DONTNEED):
                # map it again; EEXIST just means the vCPU was already woken.
                start, end = self.installer.byte_range(granule, granule + 1)
                try:
                    self.uffd.continue_(self.guest_base + start, end - start)
                except PageExists:
                    pass
                self.counters.resolved(time.perf_counter() - read_at, count)
        if not mine:
            return
        self.urgent_idle.clear()
        self._in_flight.inc(len(mine))
        try:
            self._fetch(mine, wanted, read_at)
        finally:
            self.urgent_idle.set()

    def _fetch(self, mine: list[int], wanted: dict[int, int], read_at: float) -> None:
        """Pipeline the requests, then receive, verify and install granule by granule. If the
        link breaks, reconnect and request again whatever is not installed yet."""
        runs = {g: self.installer.data_runs(*self.installer.byte_range(g, g + 1)) for g in mine}
        left = list(mine)
        while left:
            try:
                stream = self.source.stream
                for g in left:
                    self.installer.request(stream, runs[g])
                while left:
                    g = left[0]
                    self.installer.finish(stream, g, g + 1, runs[g], self.counters)
                    left.pop(0)
                    self._in_flight.dec()
                    self.counters.resolved(time.perf_counter() - read_at, wanted[g])
                    self.installed(g, g + 1)
            except TRANSIENT as e:
                self.source.reconnect(e)
            except BaseException:
                self._in_flight.dec(len(left))
                raise

    def installed(self, first: int, end: int) -> None:
        """[first, end) is installed: faults that waited on it (on the puller) are resolved now."""
        now = time.perf_counter()
        with self.waiting_lock:
            for g in range(first, end):
                for read_at in self.waiting.pop(g, ()):
                    self.counters.resolved(now - read_at)

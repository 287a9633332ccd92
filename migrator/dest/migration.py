"""One guest's migration: its memory, its two streams, the fault resolver and the puller."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict, dataclass

from cffi_uffd import Mapping, Userfaultfd, fallocate

from .. import metrics
from ..client.stream import PageStream
from ..protocol import PAGE_SIZE
from ..protocol.manifest import POISON, ZERO, Manifest
from ..stats import summarize
from .backing import Backing
from .installer import Installer
from .pages import ABSENT, CLAIMED, POISONED, PRESENT, PageTable
from .puller import BackgroundPuller
from .reconnect import Recovery, SourceStream
from .resolver import FaultResolver

log = logging.getLogger("migrator.dest")

PHASES = ("starting", "running", "paused", "complete", "failed", "guest-lost")


@dataclass(frozen=True)
class SourceLink:
    url: str
    token: str | None
    ssl_context: object = None

    def open(self, stream: str, session: str) -> PageStream:
        return PageStream(self.url, stream, self.token, session, ssl_context=self.ssl_context)


class Migration:
    def __init__(self, session: str, manifest: Manifest, backing: Backing, source: SourceLink,
                 uffd_fd: int, memfd: int, guest_base: int, background_delay: float = 0.0,
                 resume_deadline: float = 60.0):
        self.session, self.manifest, self.backing = session, manifest, backing
        self.phase = "starting"
        self.error: str | None = None
        self.started = time.monotonic()
        self.finished: float | None = None
        self.guest_report: dict = {}
        self.stall_samples: list[float] = []  # seconds, as the guest measured them
        self.injected_poison: list[int] = []  # pages poisoned on this host during the run
        self.closed = False
        self._closing = threading.Lock()
        self.done = threading.Event()
        self._stop = threading.Event()
        self._memfd = memfd
        self.uffd = Userfaultfd(fd=uffd_fd)
        self.alias = Mapping.shared(memfd, manifest.size, page_size=backing.memory_page_size)
        self.table = PageTable(manifest.size // backing.granularity)
        self.installer = Installer(manifest, backing.granularity, self.alias, self.uffd,
                                   guest_base, self.table)
        self._phase_lock = threading.Lock()
        self._paused_streams: set[str] = set()
        self.recoveries: list[Recovery] = []
        self._streams = [
            SourceStream(source, name, session, manifest.image_id, resume_deadline,
                         backing.mode, self._pause, self._resume, self._stop)
            for name in ("urgent", "background")
        ]
        self.resolver = FaultResolver(self.uffd, self.installer, self.table, self._streams[0],
                                      guest_base, manifest.size, self._stop, backing.mode,
                                      backing.backing)
        self.puller = BackgroundPuller(self.installer, self.table, self._streams[1],
                                       self.resolver, self._stop, background_delay)
        self._threads = [
            threading.Thread(target=self._guard, args=(self.resolver.run,), name=f"faults-{session}", daemon=True),
            threading.Thread(target=self._guard, args=(self._pull,), name=f"pull-{session}", daemon=True),
        ]

    def _pause(self, stream: str) -> None:
        with self._phase_lock:
            self._paused_streams.add(stream)
            if self.phase == "running":
                self._set_phase("paused")

    def _resume(self, recovery: Recovery) -> None:
        with self._phase_lock:
            self.recoveries.append(recovery)
            self._paused_streams.discard(recovery.stream)
            if self.phase == "paused" and not self._paused_streams:
                self._set_phase("running")

    def _set_phase(self, phase: str) -> None:
        mode = self.backing.mode
        metrics.MIGRATIONS.labels(mode, self.phase).dec()
        metrics.MIGRATIONS.labels(mode, phase).inc()
        self.phase = phase
        if phase not in ("running", "paused"):
            remaining = self.manifest.pages - self.resolver.counters.pages - self.puller.counters.pages
            metrics.PAGES_REMAINING.labels(mode).dec(remaining)

    def start(self) -> None:
        metrics.MIGRATIONS.labels(self.backing.mode, self.phase).inc()
        metrics.PAGES_REMAINING.labels(self.backing.mode).inc(self.manifest.pages)
        metrics.MEMORY_ERRORS.labels(self.backing.mode, "source").inc(self.manifest.count(POISON))
        metrics.POISONED_BYTES.labels(self.backing.mode).inc(
            len(self.installer.poisoned) * self.installer.granularity)
        self._set_phase("running")
        for t in self._threads:
            t.start()

    def _guard(self, body) -> None:
        try:
            body()
        except Exception as e:  # any failure ends this migration, loudly, never silently
            if not self._stop.is_set():
                log.exception("migration %s failed", self.session)
                self.fail(f"{type(e).__name__}: {e}")

    def _pull(self) -> None:
        self.puller.run()
        while not self.table.all_present.wait(0.05):
            if self._stop.is_set():
                return
        self._complete()

    def _complete(self) -> None:
        expected = self.manifest.pages - self.unverified_poisoned_pages
        if self.installer.mismatched_pages or self.verified_pages != expected:
            self.fail(f"verified {self.verified_pages} of {expected} pages, "
                      f"{len(self.installer.mismatched_pages)} mismatched")
            return
        self.finished = time.monotonic()
        self._set_phase("complete")
        metrics.MIGRATION_DURATION.labels(self.backing.mode).observe(self.finished - self.started)
        log.info("migration %s complete: %d pages verified in %.2fs", self.session,
                 self.verified_pages, self.finished - self.started)
        self.done.set()

    def fail(self, reason: str, phase: str = "failed") -> None:
        if self.phase not in ("starting", "running", "paused"):
            return
        self.error = reason
        self._set_phase(phase)
        metrics.ERRORS.labels(self.backing.mode, phase).inc()
        self.finished = time.monotonic()
        self._stop.set()
        self.done.set()

    @property
    def unverified_poisoned_pages(self) -> int:
        """Pages never fetched because their granule was poisoned on the source."""
        return len(self.installer.poisoned_on_source) * self.installer.pages_per_granule

    def inject_poison(self, page: int) -> dict:
        """A memory error on this host in a guest page: the page's whole granule becomes
        inaccessible to the guest (4 KiB with HGM, the huge page without), as the kernel
        would do. Returns what was poisoned."""
        with self._closing:
            if self.closed:
                raise ValueError("the guest has left; nothing to poison")
            return self._inject_poison(page)

    def _inject_poison(self, page: int) -> dict:
        if not 0 <= page < self.manifest.pages:
            raise ValueError(f"page {page} is outside the guest's {self.manifest.pages} pages")
        if self.phase not in ("running", "paused", "complete"):
            raise ValueError(f"the migration is {self.phase}; nothing to poison")
        inst, table = self.installer, self.table
        granule = page // inst.pages_per_granule
        with table.lock:
            state = table.state[granule]
            if state == CLAIMED:
                raise BlockingIOError(f"page {page} is being installed right now; retry")
            table.state[granule] = CLAIMED if state == ABSENT else state
        start, end = inst.byte_range(granule, granule + 1)
        if state in (ABSENT, PRESENT):
            inst.poisoned.add(granule)
            # Mark first: a fault from now on poisons instead of re-installing.
            table.mark_poisoned(granule)
            if state == PRESENT:
                # Take the page away from the guest (and free it), as memory_failure() would.
                fallocate(self._memfd, start, end - start, punch_hole=True)
            inst.poison(granule, self.resolver.counters)
            self.injected_poison.append(page)
            metrics.MEMORY_ERRORS.labels(self.backing.mode, "injected").inc()
            metrics.POISONED_BYTES.labels(self.backing.mode).inc(end - start)
        return {"page": page, "granule_offset": start, "bytes_inaccessible": end - start,
                "was": {ABSENT: "absent", PRESENT: "installed", POISONED: "poisoned"}[state]}

    def poison_report(self) -> dict:
        inst = self.installer
        granules = sorted(inst.poisoned)
        ranges: list[list[int]] = []
        for g in granules:
            start = g * inst.granularity
            if ranges and ranges[-1][0] + ranges[-1][1] == start:
                ranges[-1][1] += inst.granularity
            else:
                ranges.append([start, inst.granularity])
        return {
            "source_pages": self.manifest.count(POISON),
            "injected_pages": len(self.injected_poison),
            "errors": self.manifest.count(POISON) + len(self.injected_poison),
            "granules": len(granules),
            "bytes_inaccessible": len(granules) * inst.granularity,
            "ranges": ranges,
        }

    @property
    def verified_pages(self) -> int:
        return self.resolver.counters.verified_pages + self.puller.counters.verified_pages

    def close(self) -> None:
        # Under the lock inject_poison() holds: once the guest's fds are closed their numbers
        # may belong to the next guest, whose memory must never be punched by mistake.
        with self._closing:
            self.closed = True
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread() and t.is_alive():
                t.join(timeout=5)
        for s in self._streams:
            s.close()
        self.alias.close()
        self.uffd.close()
        os.close(self._memfd)

    def report(self) -> dict:
        r, p = self.resolver.counters, self.puller.counters
        end = self.finished or time.monotonic()
        return {
            "session": self.session,
            "phase": self.phase,
            "error": self.error,
            "mode": self.backing.mode,
            "backing": self.backing.backing,
            "backing_label": self.backing.label,
            "granularity_bytes": self.backing.granularity,
            "faults": self.resolver.faults,
            "fault_threads": len(self.resolver.faults_by_thread),
            "faults_waited_on_background": self.resolver.waited_on_background,
            "fault_latency_seconds": summarize(r.latencies),
            "bytes_urgent": r.bytes,
            "bytes_background": p.bytes,
            "background_bytes_per_second": self.puller.throughput(),
            "pages_urgent": r.pages,
            "pages_background": p.pages,
            "pages_total": self.manifest.pages,
            "pages_present": self.table.present * (self.backing.granularity // PAGE_SIZE),
            "zero_pages": self.manifest.count(ZERO),
            "verified_pages": self.verified_pages,
            "mismatched_pages": len(self.installer.mismatched_pages),
            "refetched_pages": r.refetches + p.refetches,
            "eexist": r.eexist + p.eexist,
            "eagain": r.eagain + p.eagain,
            "duration_seconds": end - self.started,
            "recoveries": [asdict(r) for r in self.recoveries],
            "poison": self.poison_report(),
            "guest": self.guest_report,
        }

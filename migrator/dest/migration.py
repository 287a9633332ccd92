"""One guest's migration: its memory, its two streams, and the C loops that fill it.

Python here is the control plane: it sets up the data plane over the guest's memory, runs
the fault loop and the background loop (each a C loop with the GIL released, each on its own
stream to the source, each reconnecting through SourceStream), keeps the metrics up to date
from the loops' counters, decides the phase, and answers /v1/status.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass

from cffi_uffd import Mapping, PageExists, Userfaultfd, fallocate

from .. import metrics
from ..client.stream import PageStream
from ..protocol.manifest import POISON, ZERO, Manifest
from ..quantiles import summarize
from .. import smaps
from .backing import Backing
from .collapse import Collapser
from .dataplane import (
    ABSENT, BACKGROUND, DONE, FAILED, GUEST_GONE, POISONED, PRESENT, URGENT, BackgroundPolicy,
    DataPlane,
)
from .errors import MigrationFailed
from .reconnect import Recovery, SourceStream
from .telemetry import Telemetry

log = logging.getLogger("migrator.dest")

# complete: every page verified and installed; failed: the destination could not complete it
# (a page stayed wrong, the source did not come back, ...); guest-lost: the guest went away
# (disconnected, exited, its address space gone); guest-error: the guest broke the protocol
# after `ready` (an unknown or invalid message, a second `memory`, `bye` before the end).
PHASES = ("starting", "running", "paused", "complete", "failed", "guest-lost", "guest-error")
ACTIVE = ("starting", "running", "paused")
_GUEST_GONE_ERRNOS = (errno.ESRCH,)  # from an ioctl on the guest's userfaultfd or its mm
_WATCH_S = 0.1  # how often metrics are brought up to date
# how often completion is checked once the pull is done (only faults in flight are left): the
# migration's end is seen within this, not rounded up to the next _WATCH_S
FINISH_POLL_S = 0.001
_DRAIN_S = 30.0  # thp: how long completion waits for the last collapses


@dataclass(frozen=True)
class SourceEndpoint:
    url: str
    token: str | None
    ssl_context: object = None

    def open(self, stream: str, session: str) -> PageStream:
        return PageStream(self.url, stream, self.token, session, ssl_context=self.ssl_context)


def _continue_present(uffd: Userfaultfd, address: int, length: int) -> int:
    """CONTINUE [address, +length) page by page where not mapped (EEXIST: it still is)."""
    mapped = 0
    for a in range(address, address + length, 4096):
        try:
            uffd.continue_(a, 4096)
            mapped += 4096
        except PageExists:
            pass
    return mapped


class Migration:
    def __init__(self, session: str, manifest: Manifest, backing: Backing, source: SourceEndpoint,
                 uffd_fd: int, memfd: int, guest_base: int,
                 policy: BackgroundPolicy = BackgroundPolicy(), resume_deadline: float = 60.0,
                 guest_pid: int | None = None, guest_thp: dict | None = None):
        self.session, self.manifest, self.backing = session, manifest, backing
        self.policy = policy
        self.phase = "starting"
        self.error: str | None = None
        self.started = time.monotonic()
        self.finished: float | None = None
        self.vcpus_started: float | None = None  # the guest announced its vCPU threads
        self.guest_results: dict = {}
        self.stall_samples: list[float] = []  # seconds, as the guest measured them
        self.injected_poison: list[int] = []  # pages poisoned on this host during the run
        self.thp_errors: list[dict] = []  # thp: ranges mapped again at 4 KiB after an error
        self.closed = False
        self._closing = threading.Lock()
        self.done = threading.Event()
        self._stop = threading.Event()
        if backing.thp and guest_pid is None:
            raise ValueError("the thp mode collapses in the guest's address space: "
                             "it needs the guest's process id")
        self._memfd, self._uffd_fd = memfd, uffd_fd
        self.guest_pid, self.guest_thp, self.guest_base = guest_pid, guest_thp, guest_base
        self.huge_mapped: dict | None = None  # the guest's huge mappings at the end
        self.collapser: Collapser | None = None
        self._phase_lock = threading.Lock()
        self._paused_streams: set[str] = set()
        self.recoveries: list[Recovery] = []
        self._streams: list[SourceStream] = []
        # What is made here goes again if a later step fails (the source unreachable, a thp
        # guest gone); the guest's descriptors are its session's to close.
        with contextlib.ExitStack() as made:
            self.alias = Mapping.shared(memfd, manifest.size,
                                        page_size=backing.memory_page_size)
            made.callback(self.alias.close)
            self.plane = DataPlane(manifest, backing.granularity, self.alias, uffd_fd,
                                   guest_base, policy)
            made.callback(self.plane.close)
            self.telemetry = Telemetry(self.plane, backing)
            if backing.thp:
                self.collapser = Collapser(self.plane, guest_pid, guest_base, manifest.size,
                                           backing.collapse_size, backing.metric_labels)
                made.callback(self.collapser.stop)
            for name in ("urgent", "background"):  # each connects to the source
                stream = SourceStream(source, name, session, manifest.image_id,
                                      resume_deadline, backing.metric_labels, self._pause,
                                      self._resume, self._stop)
                self._streams.append(stream)
                made.callback(stream.close)
            made.pop_all()  # all made: close() takes them over
        self._threads = [
            threading.Thread(target=self._guard, args=(self._faults,), name=f"faults-{session}",
                             daemon=True),
            threading.Thread(target=self._guard, args=(self._background,),
                             name=f"pull-{session}", daemon=True),
            threading.Thread(target=self._guard, args=(self._watch,), name=f"watch-{session}",
                             daemon=True),
        ]
        self._background_done = threading.Event()
        self._injected_absent: set[int] = set()  # granules poisoned here before their install

    # -- phases -----------------------------------------------------------------------------
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
        labels = self.backing.metric_labels
        metrics.MIGRATIONS.labels(*labels, self.phase).dec()
        metrics.MIGRATIONS.labels(*labels, phase).inc()
        self.phase = phase
        if phase not in ("running", "paused"):
            self.telemetry.sync()
            metrics.PAGES_REMAINING.labels(*labels).dec(self.telemetry.pages_remaining)

    def start(self) -> None:
        labels = self.backing.metric_labels
        metrics.MIGRATIONS.labels(*labels, self.phase).inc()
        metrics.PAGES_REMAINING.labels(*labels).inc(self.manifest.pages)
        metrics.MEMORY_ERRORS.labels(*labels, "source").inc(self.manifest.count(POISON))
        self.plane.poison_source_pages()
        metrics.POISONED_BYTES.labels(*labels).inc(
            len(self.plane.poisoned) * self.backing.granularity)
        self._set_phase("running")
        if self.collapser:
            self.collapser.start()
        for t in self._threads:
            t.start()

    def _guard(self, body) -> None:
        try:
            body()
        except MigrationFailed as e:
            if not self._stop.is_set():
                self.fail(str(e), phase=e.phase)
        except OSError as e:
            if self._stop.is_set():
                return
            if e.errno in _GUEST_GONE_ERRNOS:
                self.fail(f"the guest exited mid-migration: {e}", phase="guest-lost")
            else:
                log.exception("migration %s failed", self.session)
                self.fail(f"{type(e).__name__}: {e}")
        except Exception as e:  # any failure ends this migration, loudly, never silently
            if not self._stop.is_set():
                log.exception("migration %s failed", self.session)
                self.fail(f"{type(e).__name__}: {e}")

    # -- the loops ---------------------------------------------------------------------------
    def _loop_ended(self, rc: int) -> None:
        if rc == FAILED:
            raise MigrationFailed(self.plane.error)
        if rc == GUEST_GONE:
            raise MigrationFailed("the guest exited mid-migration: its address space is gone",
                                  phase="guest-lost")

    def _faults(self) -> None:
        self._loop_ended(self._streams[0].run(self.plane.run_faults))

    def _background(self) -> None:
        if self._stop.wait(self.policy.delay):
            return
        rc = self._streams[1].run(self.plane.run_background)
        self._loop_ended(rc)
        if rc == DONE:
            self._background_done.set()

    def _watch(self) -> None:
        synced = time.monotonic()
        while not self._stop.is_set():
            if self._background_done.is_set():
                if self.plane.complete:
                    self._complete()
                    return
                self._stop.wait(FINISH_POLL_S)
            else:
                self._background_done.wait(_WATCH_S)
            if time.monotonic() - synced >= _WATCH_S:
                self.telemetry.sync()
                synced = time.monotonic()

    def _complete(self) -> None:
        expected = self.manifest.pages - self.unverified_poisoned_pages
        if self.plane.mismatched_pages or self.verified_pages != expected:
            self.fail(f"verified {self.verified_pages} of {expected} pages, "
                      f"{self.plane.mismatched_pages} mismatched")
            return
        self.finished = time.monotonic()  # the last page verified: the migration's end
        if self.collapser:  # the guest is told it is complete once its last range collapsed
            if not self.collapser.drain(_DRAIN_S):
                log.warning("migration %s: collapses still running after %.0fs", self.session,
                            _DRAIN_S)
            self.collapser.tail_seconds = time.monotonic() - self.finished
        self.huge_mapped = self._read_huge_mapped()
        with self._phase_lock:  # a guest lost meanwhile (a thp drain takes up to 30 s) stays lost
            if self.phase not in ACTIVE:
                return
            self._set_phase("complete")
        self._stop.set()
        self.plane.stop()
        metrics.MIGRATION_DURATION.labels(*self.backing.metric_labels).observe(self.finished - self.started)
        log.info("migration %s complete: %d pages verified in %.2fs", self.session,
                 self.verified_pages, self.finished - self.started)
        self.done.set()

    def _read_huge_mapped(self) -> dict | None:
        """The guest's memory mapped huge right now, from its /proc/PID/smaps_rollup."""
        if self.guest_pid is None:
            return None
        try:
            r = smaps.rollup(self.guest_pid)
        except OSError as e:
            return {"error": f"/proc/{self.guest_pid}/smaps_rollup: {e.strerror}"}
        out = {"pmd_mapped_bytes": r.get("ShmemPmdMapped", 0),
               "hugetlb_bytes": r.get("Shared_Hugetlb", 0) + r.get("Private_Hugetlb", 0)}
        metrics.PMD_MAPPED_BYTES.labels(*self.backing.metric_labels).set(
            out["pmd_mapped_bytes"] + out["hugetlb_bytes"])
        return out

    def fail(self, reason: str, phase: str = "failed") -> None:
        with self._phase_lock:
            if self.phase not in ACTIVE:
                return
            self.error = reason
            self._set_phase(phase)
        log.error("migration %s %s: %s", self.session, phase, reason)
        metrics.ERRORS.labels(*self.backing.metric_labels, phase).inc()
        self.finished = time.monotonic()
        self._stop.set()
        self.plane.stop()
        self.done.set()

    # -- memory errors -----------------------------------------------------------------------
    @property
    def unverified_poisoned_pages(self) -> int:
        """Pages never fetched because their granule was poisoned before it was installed."""
        unfetched = self.plane.poisoned_on_source | self._injected_absent
        return len(unfetched) * self.plane.pages_per_granule

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
        plane, granularity = self.plane, self.backing.granularity
        granule = page // plane.pages_per_granule
        state = plane.claim_for_poison(granule)
        if state in (URGENT, BACKGROUND):
            raise BlockingIOError(f"page {page} is being installed right now; retry")
        start, end = granule * granularity, (granule + 1) * granularity
        if state in (ABSENT, PRESENT):
            try:
                if state == PRESENT:
                    # Take the page away from the guest (and free it), as memory_failure() would.
                    fallocate(self._memfd, start, end - start, punch_hole=True)
                plane.poison(granule)
                if state == PRESENT and self.backing.thp:
                    remapped = self._remap_around(start, end)
            except BaseException:
                plane.release_poison_claim(granule, state)
                raise
            if state == ABSENT:
                self._injected_absent.add(granule)
            self.injected_poison.append(page)
            metrics.MEMORY_ERRORS.labels(*self.backing.metric_labels, "injected").inc()
            metrics.POISONED_BYTES.labels(*self.backing.metric_labels).inc(end - start)
        out = {"page": page, "granule_offset": start, "bytes_inaccessible": end - start,
               "was": {ABSENT: "absent", PRESENT: "installed", POISONED: "poisoned"}[state]}
        if state == PRESENT and self.backing.thp:
            out["remapped_4k_bytes"] = remapped
        return out

    def _remap_around(self, start: int, end: int) -> int:
        """thp: punching 4 KiB out of a 2 MiB folio splits it and zaps the guest's PMD over the
        whole 2 MiB, so the 511 other pages are unmapped with their data intact. Map them again
        now, at 4 KiB: after the migration no fault loop would answer their MINOR faults. The
        range stays 4 KiB in the guest: an error costs 4 KiB of memory and 2 MiB of TLB reach.
        Returns the bytes mapped again."""
        size = self.backing.collapse_size
        first = start - start % size
        last = min(first + size, self.manifest.size)
        uffd = Userfaultfd(fd=self._uffd_fd)  # borrowed: never closed here
        base, mapped = self.guest_base, 0
        for lo, hi in ((first, start), (end, last)):
            if hi > lo:
                mapped += _continue_present(uffd, base + lo, hi - lo)
        self.thp_errors.append({"offset": start, "range": first, "remapped_4k_bytes": mapped})
        return mapped

    def poison_report(self) -> dict:
        granularity = self.backing.granularity
        ranges: list[list[int]] = []
        for g in sorted(self.plane.poisoned):
            start = g * granularity
            if ranges and ranges[-1][0] + ranges[-1][1] == start:
                ranges[-1][1] += granularity
            else:
                ranges.append([start, granularity])
        return {
            "source_pages": self.manifest.count(POISON),
            "injected_pages": len(self.injected_poison),
            "errors": self.manifest.count(POISON) + len(self.injected_poison),
            "granules": len(self.plane.poisoned),
            "bytes_inaccessible": len(self.plane.poisoned) * granularity,
            "ranges": ranges,
            "thp_ranges_back_to_4k": self.thp_errors,
        }

    # -- reports -----------------------------------------------------------------------------
    @property
    def verified_pages(self) -> int:
        p = self.plane
        return p.counters("urgent").verified_pages + p.counters("background").verified_pages

    def close(self) -> None:
        # Under the lock inject_poison() holds: once the guest's fds are closed their numbers
        # may belong to the next guest, whose memory must never be punched by mistake.
        with self._closing:
            self.closed = True
        self.fail("the guest's session ended before the migration did", phase="guest-lost")
        self._stop.set()
        self.plane.stop()
        for t in self._threads:
            if t is not threading.current_thread() and t.is_alive():
                t.join(timeout=5)
        for s in self._streams:
            s.close()
        if self.collapser:
            self.collapser.stop()
        if not any(t.is_alive() for t in self._threads):
            self.plane.close()
        self.alias.close()
        os.close(self._uffd_fd)
        os.close(self._memfd)

    def collapse_report(self) -> dict:
        """Huge pages in the guest: what the collapser did (thp), the folios the guest found
        huge at handover, and what is mapped huge at the end (every mode)."""
        report = {"applies": self.collapser is not None, "huge_mapped": self.huge_mapped}
        if self.collapser:
            report.update(self.collapser.summary())
        if self.guest_thp:
            report["at_handover"] = self.guest_thp
        return report

    def _background_first(self, background) -> bool | None:
        """Whether the pull's first request for data went out before the first fault was read
        (None: neither has happened yet)."""
        pulled, faulted = background.first_request_ns, self.plane.first_fault_read_ns
        if not pulled and not faulted:
            return None
        return bool(pulled) and (not faulted or pulled < faulted)

    def status(self) -> dict:
        plane, t = self.plane, self.telemetry
        urgent, background = plane.counters("urgent"), plane.counters("background")
        end = self.finished or time.monotonic()
        return {
            "session": self.session,
            "phase": self.phase,
            "error": self.error,
            "mode": self.backing.mode,
            "backing": self.backing.backing,
            "backing_label": self.backing.label,
            "granularity_bytes": self.backing.granularity,
            "faults": urgent.faults,
            "fault_threads": t.fault_threads,
            "faults_waited_on_background": urgent.faults_waited,
            "background_first": self._background_first(background),
            "fault_latency_seconds": summarize(t.fault_latencies()),
            "fault_stages": t.stage_summary(),
            "bytes_urgent": urgent.bytes,
            "bytes_background": background.bytes,
            "background_bytes_per_second": t.background_throughput(),
            "background_policy": asdict(self.policy),
            "background_niced": self.plane.niced,
            "background_stands_back": self.plane.stands_back,
            "pages_urgent": urgent.pages,
            "pages_background": background.pages,
            "pages_total": self.manifest.pages,
            "pages_present": plane.present * plane.pages_per_granule,
            "zero_pages": self.manifest.count(ZERO),
            "verified_pages": self.verified_pages,
            "mismatched_pages": plane.mismatched_pages,
            "refetched_pages": urgent.refetched_pages + background.refetched_pages,
            "eexist": urgent.eexist + background.eexist,
            "eagain": urgent.eagain + background.eagain,
            "duration_seconds": end - self.started,
            "vcpus_started_after_seconds": (self.vcpus_started - self.started
                                            if self.vcpus_started else None),
            "recoveries": [asdict(r) for r in self.recoveries],
            "poison": self.poison_report(),
            "collapse": self.collapse_report(),
            "guest": self.guest_results,
        }

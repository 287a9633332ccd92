"""The `thp` mode's collapser: each 2 MiB range of the guest's memory is collapsed with
MADV_COLLAPSE as soon as its last 4 KiB is installed, while the rest still migrates.

Who calls it, from the kernel's rules (mm/khugepaged.c, 6.18):
- MADV_COLLAPSE maps the range by PMD only in the address space it runs for
  (collapse_pte_mapped_thp). In every other process mapping the same file it can at most
  drop the page table (retract_page_tables, only when it had to build a new folio), and
  the next touch there faults again: in the guest's MINOR-registered view that is a userfaultfd
  event per 2 MiB, and CONTINUE maps 4 KiB PTEs again, never a PMD. So a collapse done in the
  destination's own alias view would never give the guest its PMDs back.
- So it runs for the guest's address space: process_madvise(pidfd of the guest, MADV_COLLAPSE)
  (6.1+; needs CAP_SYS_NICE and ptrace read access to the guest, as root has). uffd MINOR
  registration does not stop it (only uffd-WP does).
- The guest's folios are already 2 MiB (populated through a MADV_HUGEPAGE view), so the
  collapse copies nothing: it swaps the range's PTE table for a PMD (~0.1 ms).
- Empty PTEs are skipped, not refused: a range collapsed early would map pages the destination
  never installed. Only complete ranges are collapsed (dest_collapse.c queues them).

It runs on its own thread, woken through an eventfd by the C loops: never on a vCPU's fault
path. A collapse that fails (after 3 tries on EAGAIN) or a range skipped is counted and
reported, never hidden.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time

from cffi_uffd import UffdError, collapse

from .. import metrics
from ..quantiles import summarize
from .dataplane import POISONED, DataPlane

log = logging.getLogger("migrator.dest")

_TRIES = 3  # MADV_COLLAPSE's EAGAIN is transient (a page or lock busy): try again at most so often
_POLL_S = 0.1


class Collapser:
    def __init__(self, plane: DataPlane, guest_pid: int, guest_base: int, size: int,
                 range_bytes: int, labels: tuple[str, str]):
        self.plane, self.base, self.size, self.range_bytes = plane, guest_base, size, range_bytes
        self.labels = labels  # (mode, backing) of its metrics
        self.ranges = -(-size // range_bytes)
        self.collapsed = self.failed = self.skipped = self.retries = 0
        self.during_migration = 0  # collapsed while other ranges were still missing
        self.tail_seconds: float | None = None  # from the last page verified to the last collapse
        self.failures: dict[str, int] = {}  # errno name -> ranges
        self.first_failure: str | None = None
        self.seconds: list[float] = []
        self.done_ranges = 0
        self.pidfd = os.pidfd_open(guest_pid)
        try:
            self.wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        except OSError:
            os.close(self.pidfd)
            raise
        try:
            plane.queue_complete_ranges(range_bytes, self.wakeup)
        except BaseException:
            os.close(self.wakeup)
            os.close(self.pidfd)
            raise
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="collapse", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.wakeup], [], [], _POLL_S)
            if ready:
                try:
                    os.eventfd_read(self.wakeup)
                except BlockingIOError:
                    pass
            for r in self.plane.complete_ranges(self.done_ranges):
                if self._stop.is_set():
                    return
                self._collapse(r)
                with self._idle:
                    self.done_ranges += 1
                    self._idle.notify_all()

    def _collapse(self, r: int) -> None:
        start = r * self.range_bytes
        length = min(self.range_bytes, self.size - start)
        if POISONED in self.plane.states_of(start, length):
            # a poison marker is not a present PTE: the collapse would refuse the range, and
            # the guest's memory there must stay 4 KiB anyway, so only the error is lost
            self.skipped += 1
            metrics.COLLAPSES.labels(*self.labels, "skipped").inc()
            return
        for attempt in range(_TRIES):
            t0 = time.perf_counter_ns()
            try:
                collapse(self.base + start, length, self.pidfd)
            except UffdError as e:
                if e.errno == errno.EAGAIN and attempt + 1 < _TRIES:
                    self.retries += 1
                    continue
                self.failed += 1
                self.failures[e.errno_name] = self.failures.get(e.errno_name, 0) + 1
                if self.first_failure is None:
                    self.first_failure = f"range at guest offset 0x{start:x}: {e}"
                    log.warning("thp: collapse failed: %s", self.first_failure)
                metrics.COLLAPSES.labels(*self.labels, "failed").inc()
                return
            dt = (time.perf_counter_ns() - t0) / 1e9
            self.collapsed += 1
            if not self.plane.complete:
                self.during_migration += 1
            self.seconds.append(dt)
            metrics.COLLAPSES.labels(*self.labels, "collapsed").inc()
            metrics.COLLAPSE_LATENCY.labels(*self.labels).observe(dt)
            return

    def drain(self, timeout: float) -> bool:
        """Wait until every range queued so far has been dealt with; False on timeout."""
        end = time.monotonic() + timeout
        with self._idle:
            while self.done_ranges < self.plane.ranges_queued:
                left = end - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._idle.wait(min(left, _POLL_S))
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.plane.stop_waking()
            for fd in (self.pidfd, self.wakeup):
                if fd >= 0:
                    os.close(fd)
            self.pidfd = self.wakeup = -1

    def summary(self) -> dict:
        s = summarize(self.seconds)
        return {"folio_bytes": self.range_bytes, "folios": self.ranges,
                "complete": self.plane.ranges_queued, "collapsed": self.collapsed,
                "collapsed_during_migration": self.during_migration, "failed": self.failed,
                "skipped_poisoned": self.skipped, "retries": self.retries,
                "after_last_page_seconds": self.tail_seconds,
                "failures": dict(self.failures), "first_failure": self.first_failure,
                "collapse_seconds": {"total": sum(self.seconds), "p50": s["p50"],
                                     "p99": s["p99"], "max": s["max"], "count": s["count"]}}

"""The Python face of the destination's C loops (migrator/_cffi_src/dest_*.c).

One DataPlane per migration: the C state (granule table, fault log, counters, histograms)
over the guest's memory. run_faults() and run_background() run a C loop with the GIL
released until it stops; everything else here reads what those loops wrote.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from cffi_uffd import Mapping

from .. import metrics
from .._dataplane import ffi, lib
from ..protocol import PAGE_SIZE
from ..urgency import BACKGROUND_NICE, may_reprioritize
from ..protocol.frames import MAX_REQUEST_LENGTH
from ..protocol.manifest import POISON, Manifest

ABSENT, URGENT, BACKGROUND, PRESENT, POISONED = (
    lib.DP_ABSENT, lib.DP_URGENT, lib.DP_BACKGROUND, lib.DP_PRESENT, lib.DP_POISONED)
DONE, LINK, FAILED, GUEST_GONE = lib.DP_DONE, lib.DP_LINK, lib.DP_FAILED, lib.DP_GUEST_GONE
NOT_NICED = -100
FAULT_LOG_CAPACITY = 1 << 22  # faults remembered one by one; beyond, only counted
_POLL_MS = 50  # how often the fault loop looks at the stop flag when nothing happens
STAGES = ("read", "sent", "first_byte", "last_byte", "verified", "installed")


@dataclass(frozen=True)
class BackgroundPolicy:
    """How the background pull shares the link with urgent faults (see `dest --help`)."""

    delay: float = 0.0  # seconds after the guest connects before it starts
    chunk_bytes: int = 4 << 20  # claimed and installed per job (at least one granule)
    window: int = 2  # chunks' worth of data bytes in flight (in as many runs as that takes)
    cap_bytes_per_s: int = 0  # 0: no cap (QEMU's max-postcopy-bandwidth)
    nice: bool = True  # run niced (BACKGROUND_NICE) while no vCPU waits on it
    preempt: bool = True  # request nothing new while urgent faults are being served


class DataPlane:
    def __init__(self, manifest: Manifest, granularity: int, alias: Mapping, uffd_fd: int,
                 guest_base: int, policy: BackgroundPolicy):
        self.manifest, self.granularity = manifest, granularity
        self.pages_per_granule = granularity // PAGE_SIZE
        m = self._m = ffi.new("struct dp_migration *")
        # kept alive as long as the C side points into them
        self._digests = ffi.from_buffer("uint64_t[]", manifest.digests)
        self._kinds = ffi.from_buffer("uint8_t[]", manifest.kinds)
        m.uffd, m.alias, m.guest_base = uffd_fd, ffi.cast("uint8_t *", alias.address), guest_base
        m.size, m.granularity = manifest.size, granularity
        m.granules, m.pages = manifest.size // granularity, manifest.pages
        m.digests, m.kinds, m.max_request = self._digests, self._kinds, MAX_REQUEST_LENGTH
        m.fault_capacity = m.fetch_capacity = FAULT_LOG_CAPACITY
        m.chunk_bytes, m.window = policy.chunk_bytes, max(1, policy.window)
        m.cap_bytes_per_s = policy.cap_bytes_per_s
        m.preempt = int(policy.preempt)
        m.cpus = len(os.sched_getaffinity(0))
        metrics.set_bounds(m.fault_latency)
        self.niced = policy.nice and may_reprioritize()
        m.background_nice = BACKGROUND_NICE if self.niced else NOT_NICED
        if lib.dp_init(m) < 0:
            raise MemoryError("cannot allocate the granule table")
        self.granules = m.granules
        # granules that hold a memory error (marked on the source, or injected here)
        self.poisoned: set[int] = {p // self.pages_per_granule
                                   for p, k in enumerate(manifest.kinds) if k == POISON}
        self.poisoned_on_source = frozenset(self.poisoned)
        self._freed = False
        # Readers of the C tables (/v1/status, the dashboard, metrics) run in other threads than
        # close(): without this lock one could read a table while dp_free() frees it.
        self._tables = threading.RLock()

    # -- the loops (GIL released while they run) -------------------------------------------
    def poison_source_pages(self) -> None:
        """Mark the granules poisoned on the source before the guest runs: it gets SIGBUS."""
        rc = lib.dp_poison_source_pages(self._m)
        if rc < 0:
            raise OSError(-rc, "UFFDIO_POISON of a page poisoned on the source")

    def run_faults(self, fd: int) -> int:
        return lib.dp_faults_run(self._m, fd, _POLL_MS)

    def run_background(self, fd: int) -> int:
        return lib.dp_background_run(self._m, fd)

    def set_vcpus(self, vcpus: int) -> None:
        """The guest's vCPU count: the background loop stands back for faults only when they
        can fill this host's CPUs (see dest_background.c)."""
        self._m.vcpus = vcpus

    @property
    def stands_back(self) -> bool:
        """Whether the background loop stands back while faults are served."""
        m = self._m
        return bool(m.preempt) and not (m.vcpus and m.vcpus < m.cpus)

    def stop(self) -> None:
        self._m.stop = 1

    @property
    def error(self) -> str:
        return ffi.string(self._m.error).decode("utf-8", "replace")

    # -- poison injected on this host ------------------------------------------------------
    def claim_for_poison(self, granule: int) -> int:
        """Claim an absent granule (the loops then leave it alone); returns its state."""
        return lib.dp_claim_for_poison(self._m, granule)

    def release_poison_claim(self, granule: int, state: int) -> None:
        lib.dp_release_poison_claim(self._m, granule, state)

    def poison(self, granule: int) -> None:
        rc = lib.dp_poison_granule(self._m, granule)
        if rc < 0:
            raise OSError(-rc, f"UFFDIO_POISON of granule {granule}")
        self.poisoned.add(granule)
        lib.dp_mark_done(self._m, granule, granule + 1, POISONED)

    # -- thp mode: ranges complete, for the collapser (dest_collapse.c) -----------------------
    def queue_complete_ranges(self, range_bytes: int, eventfd: int) -> None:
        """From now on, queue each range of range_bytes once all its granules are done and
        write the eventfd. Before the loops run (poisoned source pages count as done too)."""
        if lib.dp_collapse_init(self._m, range_bytes // self.granularity, eventfd) < 0:
            raise MemoryError("cannot allocate the collapse queue")

    def stop_waking(self) -> None:
        """The loops write no more to the eventfd given (it is about to be closed)."""
        self._m.collapse_fd = -1

    @property
    def ranges_queued(self) -> int:
        return self._m.ranges_queued

    def complete_ranges(self, start: int) -> list[int]:
        """The indexes of the ranges queued from position start on."""
        with self._tables:
            if self._freed or not self._m.collapse_span:
                return []
            ready, end = self._m.ranges_ready, self._m.ranges_queued
            return [ready[i] for i in range(start, end)]

    def states_of(self, offset: int, length: int) -> bytes:
        """The states of the granules of guest memory [offset, offset + length)."""
        first, end = offset // self.granularity, -(-(offset + length) // self.granularity)
        with self._tables:
            if self._freed:
                return self._final_states[first:end]
            return bytes(ffi.buffer(self._m.state + first, end - first))

    # -- what the loops did ----------------------------------------------------------------
    def counters(self, stream: str):
        return self._m.urgent if stream == "urgent" else self._m.background

    @property
    def present(self) -> int:
        """Granules done: installed or poisoned."""
        return self._m.present

    @property
    def complete(self) -> bool:
        return self._m.present == self.granules

    @property
    def mismatched_pages(self) -> int:
        return self._m.mismatched_pages

    @property
    def fault_latency(self):
        return self._m.fault_latency

    def faults(self, start: int = 0) -> list[tuple[int, int, int, int]]:
        """(granule, read_ns, done_ns, thread id) of logged faults from index start."""
        with self._tables:
            if self._freed:
                return self._final_faults[start:]
            f, end = self._m.faults, self._m.faults_logged
            return [(f[i].granule, f[i].read_ns, f[i].done_ns, f[i].tid)
                    for i in range(start, end)]

    @property
    def first_fault_read_ns(self) -> int:
        """When the fault loop read its first fault (CLOCK_MONOTONIC ns); 0: none yet."""
        with self._tables:
            if self._freed:
                return self._final_faults[0][1] if self._final_faults else 0
            return self._m.faults[0].read_ns if self._m.faults_logged else 0

    @property
    def faults_logged(self) -> int:
        with self._tables:
            return len(self._final_faults) if self._freed else self._m.faults_logged

    def fetches(self) -> dict[int, tuple[int, ...]]:
        """granule -> CLOCK_MONOTONIC ns of each of STAGES, for each granule the fault loop
        fetched and installed."""
        with self._tables:
            return self._fetches()

    def _fetches(self) -> dict[int, tuple[int, ...]]:
        if self._freed:
            return self._final_fetches
        f = self._m.fetches
        return {f[i].granule: (f[i].t.read_ns, f[i].t.sent_ns, f[i].t.first_byte_ns,
                               f[i].t.last_byte_ns, f[i].t.verified_ns, f[i].t.installed_ns)
                for i in range(self._m.fetches_logged)}

    def state(self, granule: int) -> int:
        with self._tables:
            return self.states()[granule] if self._freed else self._m.state[granule]

    def states(self) -> bytes:
        """A snapshot of every granule's state."""
        with self._tables:
            if self._freed:
                return self._final_states
            return bytes(ffi.buffer(self._m.state, self.granules))

    def close(self) -> None:
        """Free the tables of the C state, only once no loop runs; the counters, the fault
        log and the granule states stay readable for reports."""
        with self._tables:
            self._free()

    def _free(self) -> None:
        if not self._freed:
            self._final_faults, self._final_states = self.faults(), self.states()
            self._final_fetches = self.fetches()
            self._freed = True
            lib.dp_free(self._m)
            lib.dp_collapse_free(self._m)

"""Fetch granules from the source into the alias view, verify every 4 KiB page, install them.

Install is UFFDIO_CONTINUE on the guest view: the data is already in the memfd's page cache
(written through the alias), CONTINUE only maps it and wakes the vCPUs waiting on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cffi_uffd import Mapping, MappingChanged, PageExists, Userfaultfd, populate

from .. import metrics
from ..client.stream import PageStream
from ..protocol import PAGE_SIZE
from ..protocol.digest import mismatches
from ..protocol.frames import MAX_REQUEST_LENGTH
from ..protocol.manifest import DATA, POISON, Manifest
from .pages import PageTable

MAX_VERIFY_ATTEMPTS = 3
_PIECE = 1 << 20  # verify received data in pieces of this size, while more arrives
_EAGAIN_BACKOFF_S = 0.0005


class MigrationFailed(RuntimeError):
    """The migration cannot complete correctly; the message says why."""


@dataclass
class StreamCounters:
    """What one thread (the fault resolver or the puller) did; mirrored into Prometheus."""

    mode: str
    stream: str  # "urgent" or "background"
    backing: str = ""
    pages: int = 0
    bytes: int = 0
    verified_pages: int = 0
    refetches: int = 0
    eexist: int = 0
    eagain: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, one per resolved fault

    def __post_init__(self) -> None:
        self._bytes = metrics.FETCHED_BYTES.labels(self.mode, self.stream)
        self._pages = metrics.FETCHED_PAGES.labels(self.mode, self.stream)
        self._remaining = metrics.PAGES_REMAINING.labels(self.mode)
        self._verified = metrics.VERIFIED_PAGES.labels(self.mode)
        self._latency = metrics.FAULT_LATENCY.labels(self.mode, self.backing)

    def received(self, nbytes: int) -> None:
        self.bytes += nbytes
        self._bytes.inc(nbytes)

    def installed(self, pages: int) -> None:
        self.pages += pages
        self._pages.inc(pages)
        self._remaining.dec(pages)

    def verified(self, pages: int) -> None:
        self.verified_pages += pages
        self._verified.inc(pages)

    def resolved(self, latency: float, faults: int = 1) -> None:
        self.latencies.extend([latency] * faults)
        for _ in range(faults):
            self._latency.observe(latency)

    def race(self, kind: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        metrics.INSTALL_RACES.labels(self.mode, kind).inc()


class Installer:
    def __init__(self, manifest: Manifest, granularity: int, alias: Mapping, uffd: Userfaultfd,
                 guest_base: int, table: PageTable):
        self.manifest, self.granularity = manifest, granularity
        self.alias, self.uffd, self.guest_base, self.table = alias, uffd, guest_base, table
        self.pages_per_granule = granularity // PAGE_SIZE
        self.mismatched_pages: set[int] = set()
        # Granules that hold a memory error: a poisoned 4 KiB page poisons its whole granule,
        # which is the point of the comparison (4 KiB with HGM, the huge page without).
        ppg = self.pages_per_granule
        self.poisoned: set[int] = {p // ppg for p, k in enumerate(manifest.kinds) if k == POISON}
        self.poisoned_on_source = set(self.poisoned)

    # -- which bytes travel ------------------------------------------------------------------
    def data_runs(self, start: int, end: int) -> list[tuple[int, int]]:
        """(offset, length) runs of the non-zero pages in image bytes [start, end).

        Zero pages need no transfer: the guest's fresh memfd is already zero.
        """
        kinds, ppg, poisoned = self.manifest.kinds, self.pages_per_granule, self.poisoned
        wanted = (lambda p: kinds[p] == DATA and p // ppg not in poisoned) if poisoned else (
            lambda p: kinds[p] == DATA)
        runs: list[tuple[int, int]] = []
        page, last = start // PAGE_SIZE, end // PAGE_SIZE
        while page < last:
            if not wanted(page):
                page += 1
                continue
            first = page
            limit = min(last, first + MAX_REQUEST_LENGTH // PAGE_SIZE)
            while page < limit and wanted(page):
                page += 1
            runs.append((first * PAGE_SIZE, (page - first) * PAGE_SIZE))
        return runs

    # -- the steps ---------------------------------------------------------------------------
    def prepare(self, start: int, end: int) -> None:
        """Map the alias pages of [start, end) in one call, instead of taking a page fault per
        4 KiB on the first write (data) or the first read (verifying zero pages)."""
        populate(self.alias.address + start, end - start)

    def request(self, stream: PageStream, runs: list[tuple[int, int]]) -> None:
        for offset, length in runs:
            stream.send(offset // PAGE_SIZE, offset, length)

    def receive(self, stream: PageStream, start: int, end: int, runs: list[tuple[int, int]],
                counters: StreamCounters) -> None:
        """Receive the requested runs of [start, end) into the alias and verify every page.

        Each piece is checked as soon as it lands, while the next is still on the wire, and
        the zero pages between runs are checked in the gaps. Bad pages are fetched again; if
        they stay bad the migration fails: a wrong page is never installed.
        """
        view, digests = self.alias.view, self.manifest.digests
        bad: list[int] = []
        checked = start
        for offset, length in runs:
            stream.recv_header()
            for piece in range(offset, offset + length, _PIECE):
                piece_end = min(piece + _PIECE, offset + length)
                stream.recv_into(view[piece:piece_end])
                bad += mismatches(view[piece:piece_end], digests, piece // PAGE_SIZE)
            counters.received(length)
            bad += mismatches(view[checked:offset], digests, checked // PAGE_SIZE)
            checked = offset + length
        bad += mismatches(view[checked:end], digests, checked // PAGE_SIZE)
        poisoned = self._poisoned_in(start, end)
        if poisoned:  # never fetched: nothing to verify there
            ppg = self.pages_per_granule
            bad = [p for p in bad if p // ppg not in poisoned]
        for _ in range(MAX_VERIFY_ATTEMPTS - 1):
            if not bad:
                break
            counters.refetches += len(bad)
            metrics.RETRIES.labels(counters.mode, "digest_mismatch").inc(len(bad))
            for p in bad:
                stream.send(p, p * PAGE_SIZE, PAGE_SIZE)
            again = []
            for p in bad:
                stream.recv_header()
                stream.recv_into(view[p * PAGE_SIZE:(p + 1) * PAGE_SIZE])
                counters.received(PAGE_SIZE)
                again += mismatches(view[p * PAGE_SIZE:(p + 1) * PAGE_SIZE], digests, p)
            bad = again
        if bad:
            self.mismatched_pages.update(bad)
            metrics.MISMATCHED_PAGES.labels(counters.mode).inc(len(bad))
            raise MigrationFailed(
                f"{len(bad)} page(s) still differ from the manifest digests after "
                f"{MAX_VERIFY_ATTEMPTS} fetches (first: page {bad[0]}); refusing to install them")
        counters.verified((end - start) // PAGE_SIZE - len(poisoned) * self.pages_per_granule)

    def _poisoned_in(self, start: int, end: int) -> list[int]:
        if not self.poisoned:
            return []
        return [g for g in range(start // self.granularity, end // self.granularity)
                if g in self.poisoned]

    def poison(self, granule: int, counters: StreamCounters) -> None:
        """Install a poison marker over the granule: the guest gets SIGBUS there."""
        start, end = self.byte_range(granule, granule + 1)
        try:
            self.uffd.poison(self.guest_base + start, end - start)
        except PageExists:
            counters.race("eexist")  # marked already (a fault on it got there first)

    def install(self, start: int, end: int, counters: StreamCounters) -> None:
        """CONTINUE image bytes [start, end) into the guest, poison markers where poisoned."""
        poisoned = self._poisoned_in(start, end)
        if not poisoned:
            self._continue(start, end, counters)
            return
        for g in poisoned:
            self.poison(g, counters)
        edges = [start // self.granularity, *[x for g in poisoned for x in (g, g + 1)],
                 end // self.granularity]
        for first, last in zip(edges[::2], edges[1::2]):
            if first < last:
                self._continue(first * self.granularity, last * self.granularity, counters)

    def _continue(self, start: int, end: int, counters: StreamCounters) -> None:
        """CONTINUE [start, end); EEXIST means a page is already mapped."""
        address, length = self.guest_base + start, end - start
        while length:
            try:
                self.uffd.continue_(address, length)
                return
            except PageExists as e:
                # Some page in the range is already mapped (e.g. a re-fault after a zap was
                # resolved first); skip past it, the rest still needs mapping.
                counters.race("eexist")
                step = e.done + self.granularity
                address, length = address + step, max(0, length - step)
            except MappingChanged:
                # A REMOVE/UNMAP event is pending; the fault loop reads it, then we retry.
                counters.race("eagain")
                time.sleep(_EAGAIN_BACKOFF_S)

    # -- whole granule runs -------------------------------------------------------------------
    def byte_range(self, first_granule: int, end_granule: int) -> tuple[int, int]:
        return first_granule * self.granularity, end_granule * self.granularity

    def finish(self, stream: PageStream, first_granule: int, end_granule: int,
               runs: list[tuple[int, int]], counters: StreamCounters) -> None:
        """Receive, verify and install a claimed run of granules whose runs were requested."""
        start, end = self.byte_range(first_granule, end_granule)
        self.prepare(start, end)
        self.receive(stream, start, end, runs, counters)
        self.install(start, end, counters)
        counters.installed((end - start) // PAGE_SIZE)
        self.table.mark_present(first_granule, end_granule)
        for g in self._poisoned_in(start, end):
            self.table.mark_poisoned(g)

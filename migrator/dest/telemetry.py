"""What the C loops of one migration did, as Prometheus metrics and as results.

The loops only bump integers and histogram buckets in C; sync() (every 100 ms, and at each
phase change) carries the increments into the Prometheus series, so no fault pays for Python.

The anatomy of a fault joins two clocks that are one (CLOCK_MONOTONIC on one host): the
guest's access start and resume, and the destination's stamps of the urgent fetch.
  queue      access started -> fault event read (kernel fault path, handler wake-up, batching)
  request    event read -> request written to the socket
  network    request written -> first byte of the reply (the source and the link)
  receive    first byte -> last byte
  verify     last byte -> every page checked against its digest
  install    verified -> UFFDIO_CONTINUE returned
  wake       CONTINUE returned -> the vCPU's access completed
They add up, per fault, to the stall the vCPU saw.
"""

from __future__ import annotations

import threading
import time

from .. import metrics
from ..quantiles import summarize
from .backing import Backing
from .dataplane import DataPlane

STAGE_NAMES = ("queue", "request", "network", "receive", "verify", "install", "wake")
MEDIAN_BAND = 0.05  # the median fault's anatomy: faults ranked 45 % .. 55 % by stall
_COUNTED = ("bytes", "pages", "verified_pages", "eexist", "eagain", "refetched_pages")


class Telemetry:
    def __init__(self, plane: DataPlane, backing: Backing):
        self.plane, self.backing = plane, backing
        mode, kind = backing.mode, backing.backing
        self.vcpu_tids: set[int] = set()  # the guest's vCPU threads, as it told us
        self._lock = threading.Lock()
        self._seen = {stream: dict.fromkeys(_COUNTED, 0) for stream in ("urgent", "background")}
        self._faults_seen = 0
        self._fault_threads: set[int] = set()
        self._faults = {k: metrics.FAULTS.labels(mode, kind, k) for k in ("vcpu", "other")}
        self._latency = metrics.NativeHistogram(plane.fault_latency,
                                                metrics.FAULT_LATENCY.labels(mode, kind))
        self._in_flight = metrics.URGENT_IN_FLIGHT.labels(mode, kind)
        self._in_flight_seen = 0
        self._remaining = metrics.PAGES_REMAINING.labels(mode, kind)
        self._stages: dict[str, list[float]] = {}

    # -- into Prometheus ---------------------------------------------------------------------
    def sync(self) -> None:
        with self._lock:
            self._sync_counters()
            self._sync_faults()
            self._latency.fold()

    def _sync_counters(self) -> None:
        labels = self.backing.metric_labels
        for stream, seen in self._seen.items():
            c = self.plane.counters(stream)
            now = {name: getattr(c, name) for name in _COUNTED}
            d = {name: now[name] - seen[name] for name in _COUNTED}
            if d["bytes"]:
                metrics.FETCHED_BYTES.labels(*labels, stream).inc(d["bytes"])
            if d["pages"]:
                metrics.FETCHED_PAGES.labels(*labels, stream).inc(d["pages"])
                self._remaining.dec(d["pages"])
            if d["verified_pages"]:
                metrics.VERIFIED_PAGES.labels(*labels).inc(d["verified_pages"])
            for race in ("eexist", "eagain"):
                if d[race]:
                    metrics.INSTALL_RACES.labels(*labels, race).inc(d[race])
            if d["refetched_pages"]:
                metrics.RETRIES.labels(*labels, "digest_mismatch").inc(d["refetched_pages"])
            self._seen[stream] = now
        in_flight = self.plane.counters("urgent").in_flight
        self._in_flight.inc(in_flight - self._in_flight_seen)
        self._in_flight_seen = in_flight

    def _sync_faults(self) -> None:
        if self.plane.faults_logged == self._faults_seen:
            return
        new = self.plane.faults(self._faults_seen)
        vcpu = other = 0
        for _, _, _, tid in new:
            self._fault_threads.add(tid)
            if tid in self.vcpu_tids:
                vcpu += 1
            else:
                other += 1
        self._faults_seen += len(new)
        if vcpu:
            self._faults["vcpu"].inc(vcpu)
        if other:
            self._faults["other"].inc(other)

    @property
    def pages_remaining(self) -> int:
        """4 KiB pages not installed yet, as counted into PAGES_REMAINING so far."""
        seen = self._seen
        return (self.plane.manifest.pages - seen["urgent"]["pages"]
                - seen["background"]["pages"])

    # -- results -----------------------------------------------------------------------------
    @property
    def fault_threads(self) -> int:
        return len(self._fault_threads)

    def fault_latencies(self) -> list[float]:
        """Seconds from reading each fault to its granule's install (resolved faults only)."""
        return [(done - read) / 1e9 for _, read, done, _ in self.plane.faults() if done]

    def background_throughput(self) -> float:
        c = self.plane.counters("background")
        if not c.started_ns:
            return 0.0
        end = c.finished_ns or time.monotonic_ns()  # CLOCK_MONOTONIC, as the C loops
        return c.bytes / ((end - c.started_ns) / 1e9) if end > c.started_ns else 0.0

    def observe_stalls(self, stalls: list[list[int]]) -> None:
        """Join the guest's stalls (page, access start ns, stall ns) with the destination's
        stamps of the fetch that resolved them, into per-stage histograms and samples.

        Only the first stall on each urgently fetched granule is its fetch's anatomy; later
        stalls on it (other vCPUs, or pages fetched in the background) are not joined."""
        plane, ppg = self.plane, self.plane.pages_per_granule
        mode, kind = self.backing.mode, self.backing.backing
        fetches = plane.fetches()
        joined: dict[int, tuple[int, int]] = {}
        for page, start, stall in stalls:
            granule = page // ppg
            stamps = fetches.get(granule)
            if granule in joined or stamps is None or stamps[0] < start:
                continue
            joined[granule] = (start, start + stall)
        samples: dict[str, list[float]] = {name: [] for name in STAGE_NAMES}
        for granule, (start, resumed) in joined.items():
            read, sent, first, last, verified, installed = fetches[granule]
            # CONTINUE wakes the vCPU before it returns: the vCPU may resume first
            installed = min(installed, resumed)
            points = (start, read, sent, first, last, verified, installed, resumed)
            for name, a, b in zip(STAGE_NAMES, points, points[1:]):
                samples[name].append(max(0, b - a) / 1e9)
        for name, values in samples.items():
            child = metrics.FAULT_STAGE.labels(mode, kind, name)
            for v in values:
                child.observe(v)
        with self._lock:
            self._stages = samples

    def stage_summary(self) -> dict:
        """Per stage: a summary of its seconds over the joined faults; the stall of the same
        faults; and the median fault's anatomy: each stage's mean over the faults whose stall
        is within MEDIAN_BAND of the median, which add up to that band's stall."""
        with self._lock:
            stages = self._stages
        if not stages or not stages.get("queue"):
            return {}
        out: dict = {name: summarize(values) for name, values in stages.items()}
        faults = list(zip(*(stages[name] for name in STAGE_NAMES)))
        out["stall"] = summarize(sum(f) for f in faults)
        out["faults_joined"] = len(faults)
        ranked = sorted(faults, key=sum)
        lo, hi = (int(len(ranked) * (0.5 + d)) for d in (-MEDIAN_BAND, MEDIAN_BAND))
        band = ranked[lo:max(hi, lo + 1)]
        out["median_fault"] = {name: sum(f[i] for f in band) / len(band)
                               for i, name in enumerate(STAGE_NAMES)}
        out["median_fault"]["stall"] = sum(sum(f) for f in band) / len(band)
        return out

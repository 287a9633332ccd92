"""Every Prometheus metric of migrator, defined once. Daemons import and update them.

Names follow the Prometheus rules: prefix migrator_, base units, _total for counters. Labels
are few and bounded (mode, backing, stream, kind, phase, vcpu, endpoint); never an address or
a session id. Every destination metric carries mode and backing (e.g. shmem-emulated-hgm,
hugetlb-1G, shmem-thp-2M), so no figure can be read without what backed it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

REGISTRY = CollectorRegistry(auto_describe=True)

# 1-2-5 steps from 1 us to 60 s: a 4 KiB fault (~100 us), a 2 MiB fault (~ms) and a 1 GiB
# fault (~s) land in different buckets.
LATENCY_BUCKETS = tuple(float(f"{m}e{e}") for e in range(-6, 2) for m in (1, 2, 5)) + (60.0,)

_MB = ("mode", "backing")

# -- destination -----------------------------------------------------------------------------
FAULT_LATENCY = Histogram(
    "migrator_fault_latency_seconds", "Time from reading a fault to installing its page.",
    _MB, buckets=LATENCY_BUCKETS, registry=REGISTRY)
FAULT_STAGE = Histogram(
    "migrator_fault_stage_seconds", "The anatomy of urgent 4 KiB/huge-page faults: time in each "
    "stage from the guest's access to its resume (queue, request, network, receive, verify, "
    "install, wake); observed when the guest reports its stalls.", ("mode", "backing", "stage"),
    buckets=LATENCY_BUCKETS, registry=REGISTRY)
VCPU_STALL = Histogram(
    "migrator_vcpu_stall_seconds", "vCPU stalls as the guest measured them (accesses slower "
    "than the guest's stall threshold).", _MB, buckets=LATENCY_BUCKETS, registry=REGISTRY)
VCPU_BLOCKTIME = Counter(
    "migrator_vcpu_blocktime_seconds", "Total time each vCPU spent stalled (QEMU's blocktime).",
    ("mode", "backing", "vcpu"), registry=REGISTRY)
FAULTS = Counter(
    "migrator_faults", "userfaultfd page faults read, by the kind of thread that faulted.",
    ("mode", "backing", "thread"), registry=REGISTRY)
FETCHED_BYTES = Counter(
    "migrator_fetched_bytes", "Page bytes received from the source.", ("mode", "backing", "stream"),
    registry=REGISTRY)
FETCHED_PAGES = Counter(
    "migrator_fetched_pages", "4 KiB pages installed, by the stream that brought them (zero "
    "pages included: they are installed without transfer).", ("mode", "backing", "stream"), registry=REGISTRY)
PAGES_REMAINING = Gauge(
    "migrator_pages_remaining", "4 KiB pages not yet installed, over running migrations.",
    _MB, registry=REGISTRY)
MIGRATIONS = Gauge(
    "migrator_migrations", "Migrations by phase.", ("mode", "backing", "phase"), registry=REGISTRY)
MIGRATION_DURATION = Histogram(
    "migrator_migration_duration_seconds", "From guest handover to the last page verified.",
    _MB, buckets=LATENCY_BUCKETS, registry=REGISTRY)
URGENT_IN_FLIGHT = Gauge(
    "migrator_urgent_requests_in_flight", "Urgent page requests sent and not yet answered.",
    _MB, registry=REGISTRY)
INSTALL_RACES = Counter(
    "migrator_install_races", "Resolving ioctls that lost a race: EEXIST (already mapped) "
    "or EAGAIN (mapping changing).", ("mode", "backing", "kind"), registry=REGISTRY)
RETRIES = Counter("migrator_retries", "Operations retried, by cause.", ("mode", "backing", "cause"),
                  registry=REGISTRY)
ERRORS = Counter("migrator_errors", "Failures, by cause.", ("mode", "backing", "cause"), registry=REGISTRY)
VERIFIED_PAGES = Counter("migrator_verified_pages", "Pages checked against the manifest digest.",
                         _MB, registry=REGISTRY)
MISMATCHED_PAGES = Counter("migrator_mismatched_pages", "Pages that still differed from the "
                           "manifest after refetching.", _MB, registry=REGISTRY)

MEMORY_ERRORS = Counter(
    "migrator_memory_errors", "Memory errors (poisoned 4 KiB pages): marked on the source, or "
    "injected on this host during the run.", ("mode", "backing", "origin"), registry=REGISTRY)
POISONED_BYTES = Gauge(
    "migrator_poisoned_bytes", "Guest memory made inaccessible by poison markers: the whole "
    "granule around each error (4 KiB with HGM, the huge page without).", _MB,
    registry=REGISTRY)
GUEST_SIGBUS = Counter(
    "migrator_guest_sigbus", "Guest accesses that touched poisoned memory and got SIGBUS, as "
    "the guest reported them.", _MB, registry=REGISTRY)

COLLAPSES = Counter(
    "migrator_collapses", "thp mode: 2 MiB ranges of guest memory collapsed (MADV_COLLAPSE) "
    "once complete, by result: collapsed, failed, or skipped (a memory error in the range).",
    ("mode", "backing", "result"), registry=REGISTRY)
COLLAPSE_LATENCY = Histogram(
    "migrator_collapse_seconds", "thp mode: time of one MADV_COLLAPSE of a complete 2 MiB range.",
    _MB, buckets=LATENCY_BUCKETS, registry=REGISTRY)
PMD_MAPPED_BYTES = Gauge(
    "migrator_guest_pmd_mapped_bytes", "Guest memory mapped by huge PMDs at the end of the "
    "migration (ShmemPmdMapped of the guest's smaps_rollup; hugetlb: Shared_Hugetlb).",
    _MB, registry=REGISTRY)

# -- source ----------------------------------------------------------------------------------
SOURCE_REQUEST_LATENCY = Histogram(
    "migrator_source_request_duration_seconds", "Time to serve one request, by endpoint or "
    "stream.", ("endpoint",), buckets=LATENCY_BUCKETS, registry=REGISTRY)
SOURCE_SERVED_BYTES = Counter(
    "migrator_source_served_bytes", "Page bytes sent, by endpoint or stream.", ("endpoint",),
    registry=REGISTRY)
SOURCE_REQUESTS = Counter(
    "migrator_source_requests", "Requests answered, by endpoint or stream and outcome.",
    ("endpoint", "outcome"), registry=REGISTRY)


def start_dest_series(mode: str, backing: str, phases: tuple[str, ...]) -> None:
    """Create every destination series at zero, so rate() and increase() see the first
    migration's start and panels show 0 rather than 'No data'."""
    FAULT_LATENCY.labels(mode, backing)
    for stage in ("queue", "request", "network", "receive", "verify", "install", "wake"):
        FAULT_STAGE.labels(mode, backing, stage)
    VCPU_STALL.labels(mode, backing)
    for thread in ("vcpu", "other"):
        FAULTS.labels(mode, backing, thread)
    for stream in ("urgent", "background"):
        FETCHED_BYTES.labels(mode, backing, stream)
        FETCHED_PAGES.labels(mode, backing, stream)
    PAGES_REMAINING.labels(mode, backing)
    URGENT_IN_FLIGHT.labels(mode, backing)
    for phase in phases:
        MIGRATIONS.labels(mode, backing, phase)
    MIGRATION_DURATION.labels(mode, backing)
    for kind in ("eexist", "eagain"):
        INSTALL_RACES.labels(mode, backing, kind)
    for cause in ("digest_mismatch", "reconnect"):
        RETRIES.labels(mode, backing, cause)
    for cause in ("failed", "guest-lost", "guest-error", "source_lost"):
        ERRORS.labels(mode, backing, cause)
    VERIFIED_PAGES.labels(mode, backing)
    MISMATCHED_PAGES.labels(mode, backing)
    for origin in ("source", "injected"):
        MEMORY_ERRORS.labels(mode, backing, origin)
    POISONED_BYTES.labels(mode, backing)
    GUEST_SIGBUS.labels(mode, backing)
    if backing.startswith("shmem-thp"):
        for result in ("collapsed", "failed", "skipped"):
            COLLAPSES.labels(mode, backing, result)
        COLLAPSE_LATENCY.labels(mode, backing)
    PMD_MAPPED_BYTES.labels(mode, backing)


def set_bounds(histogram) -> None:
    """Give a C loop's histogram (struct dp_histogram) the upper bounds of LATENCY_BUCKETS,
    in ns; the buckets past them, the last one +Inf, get the largest bound."""
    n = len(histogram.bounds_ns)
    if len(LATENCY_BUCKETS) + 1 > n:
        raise ValueError(f"{len(LATENCY_BUCKETS)} buckets do not fit in {n}")
    for i in range(n):
        histogram.bounds_ns[i] = (int(LATENCY_BUCKETS[i] * 1e9) if i < len(LATENCY_BUCKETS)
                                  else 2**64 - 1)


class NativeHistogram:
    """A C loop's histogram (struct dp_histogram, in ns, bounds from set_bounds) carried into
    a Histogram child.

    The C side only bumps its bucket counts; fold() adds what it counted since the last fold.
    prometheus_client has no public call for adding counted observations; its children keep
    exactly these two things (_buckets, per bucket, +Inf last; _sum), unchanged since 0.4."""

    def __init__(self, histogram, child) -> None:
        self._c, self._child = histogram, child
        self._seen = [0] * len(child._buckets)
        self._sum_seen = 0

    def fold(self) -> None:
        counts = [self._c.counts[i] for i in range(len(self._seen))]
        total = self._c.sum_ns
        for bucket, now, seen in zip(self._child._buckets, counts, self._seen):
            if now != seen:
                bucket.inc(now - seen)
        if total != self._sum_seen:
            self._child._sum.inc((total - self._sum_seen) / 1e9)
        self._seen, self._sum_seen = counts, total


def exposition(accept_header: str | None) -> tuple[bytes, str]:
    """The registry in the text format or OpenMetrics, as the Accept header asks."""
    encoder, content_type = choose_encoder(accept_header or "")
    return encoder(REGISTRY), content_type

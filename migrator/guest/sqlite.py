"""The SQLite workload's vCPUs (migrator.guest._sqlite, in C, GIL released): real queries over
a database that is the guest's memory, opened in place with sqlite3_deserialize (read-only, no
copy) and read through SQLite's memory-mapped reads, so every page comes from guest memory.

    runs = run_vcpus(view.address, view.length, 2, Workload(mix=(70, 20, 10), rate=500, seed=1), stop)
    runs[0].latency_ns()   # from each query's scheduled start to its end (open loop)
"""

from __future__ import annotations

import threading
import time
from array import array
from dataclasses import dataclass, field
from typing import Callable

from ..errors import MigratorError
from ..quantiles import summarize
from ..workload.queries import CODE_SCRAMBLE, KINDS, META_SQL, RANGE_SPAN, SQL
from ._sqlite import ffi, lib
from .vcpu import run_threads

CACHE_PAGES = 16  # SQLite's own page cache: small, pages are read from guest memory
MMAP_BYTES = 1 << 62  # as much of the buffer as SQLite allows (its SQLITE_MAX_MMAP_SIZE)
MAX_QUERIES = 400_000  # per vCPU and run: the loop stops there (reported as 'capped')
MAX_TRACE_PAGES = 2_000_000  # page reads recorded per vCPU with --record
RATE_ROUNDS = 3
MAX_SAMPLES = 100_000  # query latencies per phase sent back for plots
_SQL = [ffi.new("char[]", s.encode()) for s in (*SQL, META_SQL)]
_SQL_ARRAY = ffi.new("const char *[]", _SQL)
_META = len(SQL)


@dataclass(frozen=True)
class Workload:
    mix: tuple[int, ...]  # weights of point, range, join
    rate: float  # queries per second per vCPU, open loop; 0: as fast as they go
    seed: int


@dataclass
class QueryRun:
    """One vCPU's queries: per query its kind, parameter, times (CLOCK_MONOTONIC ns), thread
    CPU time, rows and answer checksum; the guest pages it read, with --record."""

    vcpu: int
    kind: array = field(default_factory=lambda: array("b"))
    param: array = field(default_factory=lambda: array("q"))
    sched_ns: array = field(default_factory=lambda: array("Q"))
    start_ns: array = field(default_factory=lambda: array("Q"))
    end_ns: array = field(default_factory=lambda: array("Q"))
    cpu_ns: array = field(default_factory=lambda: array("Q"))
    rows: array = field(default_factory=lambda: array("i"))
    answer: array = field(default_factory=lambda: array("Q"))
    capped: bool = False
    pages: list[int] | None = None  # recorded page reads, in order
    error: str | None = None

    def latency_ns(self) -> list[int]:
        return [e - s for s, e in zip(self.sched_ns, self.end_ns)]

    def off_cpu_ns(self) -> list[int]:
        """Time each query spent off the CPU: blocked on faults (or preempted)."""
        return [max(0, e - s - c) for s, e, c in zip(self.start_ns, self.end_ns, self.cpu_ns)]


class Database:
    """A connection over buf (the guest's memory), for the thread that opened it."""

    def __init__(self, address: int, size: int, record: bool = False):
        conn = ffi.new("struct sqlw_conn **")
        err = ffi.new("char[]", 512)
        if lib.sqlw_open(ffi.cast("const uint8_t *", address), size, size, MMAP_BYTES,
                         CACHE_PAGES, _SQL_ARRAY, len(_SQL), int(record), conn, err, 512):
            raise MigratorError(f"cannot open the SQLite database in guest memory: "
                                f"{ffi.string(err).decode()}; was the image built with "
                                "`migrator workload build-sqlite`?")
        self.conn = conn[0]
        facts = ffi.new("int64_t[4]")
        if lib.sqlw_scalars(self.conn, _META, facts, 4):
            self.close()
            raise MigratorError("the guest image has no workload meta table: build it with "
                                "`migrator workload build-sqlite`")
        self.customers, self.items, self.orders, self.placed_max = list(facts)

    def plan(self, workload: Workload, vcpu: int, t0_ns: int, closed: bool = False):
        p = ffi.new("struct sqlw_plan *")
        p.seed = (workload.seed * 0x9E3779B97F4A7C15 + vcpu * 0xBF58476D1CE4E5B9 + 1) % 2**64
        p.interval_ns = 0 if closed or not workload.rate else int(1e9 / workload.rate)
        p.t0_ns = t0_ns
        total = 0
        for i, w in enumerate(workload.mix):
            total += w
            p.cum_weight[i] = total
        # point: a customer id scrambled into its code; range: a start in placed; join: a customer
        for i, k in enumerate((self.customers, self.placed_max, self.customers)):
            p.keys[i] = max(1, k)
        p.scramble[0] = CODE_SCRAMBLE
        p.span = RANGE_SPAN
        p.nkinds = len(KINDS)
        return p

    def run(self, plan, stop, max_queries: int = MAX_QUERIES, record: bool = False,
            vcpu: int = 0) -> QueryRun:
        q = ffi.new("struct sqlw_query[]", max_queries)
        trace = ffi.new("uint32_t[]", MAX_TRACE_PAGES) if record else ffi.NULL
        traced = ffi.new("uint64_t *")
        n = lib.sqlw_run(self.conn, plan, q, max_queries, stop, trace,
                         MAX_TRACE_PAGES if record else 0, traced)
        out = QueryRun(vcpu)
        if n < 0:
            out.error = (f"query {-n - 1} ({KINDS[q[-n - 1].kind]}) failed: "
                         f"{ffi.string(lib.sqlw_error(self.conn)).decode()}")
            n = -n - 1
        out.capped = n == max_queries
        for i in range(n):
            r = q[i]
            out.kind.append(r.kind)
            out.param.append(r.param)
            out.sched_ns.append(r.sched_ns)
            out.start_ns.append(r.start_ns)
            out.end_ns.append(r.end_ns)
            out.cpu_ns.append(r.cpu_ns)
            out.rows.append(r.rows)
            out.answer.append(r.answer)
        if record:
            out.pages = list(ffi.unpack(trace, traced[0]))
        return out

    def close(self) -> None:
        lib.sqlw_close(self.conn)


def new_stop():
    """The flag the vCPUs look at between queries: set stop[0] = 1 to end their loops."""
    return ffi.new("int *", 0)


def run_vcpus(address: int, size: int, vcpus: int, workload: Workload, stop,
              announce: Callable[[list[int]], None] | None = None,
              record: bool = False) -> list[QueryRun]:
    """Each vCPU thread opens the database in guest memory and runs the workload until stop.
    announce(thread ids) is called once all vCPU threads exist and before any reads memory."""
    runs = [QueryRun(v) for v in range(vcpus)]

    def body(v: int) -> None:
        try:
            db = Database(address, size, record)
        except MigratorError as e:
            runs[v].error = str(e)
            return
        try:
            # the schedule starts once the database is open; vCPUs spread over one interval,
            # so they do not all query at the same instant
            offset = int(v * 1e9 / workload.rate / vcpus) if workload.rate else 0
            plan = db.plan(workload, v, time.monotonic_ns() + offset)
            runs[v] = db.run(plan, stop, record=record, vcpu=v)
        finally:
            db.close()

    run_threads(vcpus, body, announce)
    return runs


def query_rate(address: int, size: int, workload: Workload, seconds: float) -> dict:
    """Queries per second of one thread running the mix as fast as it goes (closed loop) over
    memory that is all present: best of RATE_ROUNDS rounds of seconds / RATE_ROUNDS each."""
    db = Database(address, size)
    try:
        best = 0.0
        counted = 0
        for r in range(RATE_ROUNDS):
            stop = new_stop()
            timer = threading.Timer(seconds / RATE_ROUNDS, lambda s=stop: s.__setitem__(0, 1))
            timer.start()
            run = db.run(db.plan(workload, 1000 + r, 0, closed=True), stop)
            timer.join()
            if run.error:
                raise MigratorError(run.error)
            if len(run.end_ns) > 1:
                rate = (len(run.end_ns) - 1) / ((run.end_ns[-1] - run.start_ns[0]) / 1e9)
                if rate > best:
                    best, counted = rate, len(run.end_ns)
        return {"queries_per_second": best, "queries": counted, "rounds": RATE_ROUNDS,
                "seconds": seconds}
    finally:
        db.close()


def latency_summary(runs: list[QueryRun], split_ns: int | None = None) -> dict:
    """Per kind and all together: queries and latency (s) due before split_ns ('during') and
    from it on ('after'); without split_ns all are 'during'. samples_s: the raw latencies."""
    out: dict = {"queries": {k: 0 for k in KINDS}}
    phases: dict[str, dict[str, list[float]]] = {"during": {}, "after": {}}
    for r in runs:
        for k, s, lat in zip(r.kind, r.sched_ns, r.latency_ns()):
            kind = KINDS[k]
            out["queries"][kind] += 1
            phase = "after" if split_ns is not None and s >= split_ns else "during"
            phases[phase].setdefault(kind, []).append(lat / 1e9)
    out["samples_s"] = {}
    for phase, by_kind in phases.items():
        every = [x for v in by_kind.values() for x in v]
        out[phase] = {**_brief(every), "by_kind": {k: _brief(v) for k, v in by_kind.items()}}
        out["samples_s"][phase] = every[:MAX_SAMPLES]
    out["queries"]["total"] = sum(out["queries"][k] for k in KINDS)
    return out


def _brief(latencies: list[float]) -> dict:
    s = summarize(latencies)
    return {"count": s["count"], "p50": s["p50"], "p99": s["p99"], "max": s["max"]}

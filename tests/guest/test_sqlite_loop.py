"""The SQLite workload's C loop in-process, over memory behind a real userfaultfd: SQLite reads
the database from that memory (each first read of a page faults), with the GIL released (the
resolver here is a Python thread), and the open loop counts a query's latency from when it was
due."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from cffi_uffd import PAGE_SIZE, Mapping, PageFault, RegisterMode
from migrator.guest import sqlite
from migrator.workload import database
from migrator.workload.queries import KINDS, answer

SIZE = 8 << 20
DELAY_S = 0.004
RUN_S = 0.6


@pytest.fixture(scope="module")
def db_file(tmp_path_factory):
    return database.build(SIZE, tmp_path_factory.mktemp("db") / "guest.db")["path"]


def _run_over_faulting_memory(new_uffd, resolver, db_file, rate: float, record: bool = False):
    """One vCPU querying a database whose pages arrive on first touch, one in four DELAY_S
    late."""
    uffd = new_uffd()
    uffd.api()
    image = open(db_file, "rb").read()
    with Mapping.anonymous(SIZE) as memory, Mapping.anonymous(SIZE) as src:
        src.view[:] = image
        uffd.register(memory.address, SIZE, RegisterMode.MISSING)

        late = iter(range(1 << 30))

        def late_copy(fault: PageFault) -> None:
            if next(late) % 4 == 0:  # every 4th page is on its way from the source host
                time.sleep(DELAY_S)
            page = (fault.address - memory.address) // PAGE_SIZE * PAGE_SIZE
            uffd.copy(memory.address + page, src.address + page, PAGE_SIZE)

        stop = sqlite.new_stop()
        timer = threading.Timer(RUN_S, lambda: stop.__setitem__(0, 1))
        with resolver(uffd, late_copy) as r:
            timer.start()
            runs = sqlite.run_vcpus(memory.address, SIZE, 1, sqlite.Workload((60, 25, 15), rate, 3),
                                    stop, record=record)
            timer.join()
        faulted = {(f.address - memory.address) // PAGE_SIZE for f in r.faults()}
    return runs[0], faulted


def test_queries_read_guest_memory_and_a_fault_is_their_time_off_the_cpu(
        new_uffd, resolver, db_file):
    run, faulted = _run_over_faulting_memory(new_uffd, resolver, db_file, rate=200, record=True)
    assert run.error is None and len(run.kind) > 10
    # SQLite read its pages from the registered memory (no private copy): they faulted there,
    # and the recorder saw each of them read, but for the schema's and the meta table's, read
    # when the database was opened, before the queries (and the recording) began
    assert len(faulted) > 5 and len(faulted - set(run.pages)) <= 2
    assert set(run.pages) <= set(range(SIZE // PAGE_SIZE))
    # a query that met a fault waited for it off the CPU, and its latency holds the wait
    waited = [i for i, t in enumerate(run.off_cpu_ns()) if t >= DELAY_S * 1e9]
    assert waited and all(run.latency_ns()[i] >= DELAY_S * 1e9 for i in waited)
    # the answers are the database's, as Python's own sqlite3 reads it from the file
    db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    assert {KINDS[k] for k in run.kind} == set(KINDS)
    for k, p, rows, got in zip(run.kind, run.param, run.rows, run.answer):
        assert answer(db, k, p) == (rows, got)


def test_open_loop_latency_counts_from_when_each_query_was_due(new_uffd, resolver, db_file):
    run, _ = _run_over_faulting_memory(new_uffd, resolver, db_file, rate=2000)
    service = [e - s for s, e in zip(run.start_ns, run.end_ns)]
    latency = run.latency_ns()
    assert all(s <= e and d <= e for d, s, e in zip(run.sched_ns, run.start_ns, run.end_ns))
    assert all(b - a == pytest.approx(500_000, abs=1) for a, b in zip(run.sched_ns, run.sched_ns[1:]))
    # queries due while an earlier one waited on a fault started late: quick themselves
    # (no fault of their own), they still count the wait
    queued = [i for i in range(len(service)) if service[i] < 1_000_000 <= latency[i]]
    assert queued

"""The SQLite workload end to end: a source serving the database file, a destination, a guest
whose vCPUs query the database in their own migrating memory."""

from __future__ import annotations

import json

import pytest

from helpers.daemons import start_source, stop_daemon
from helpers.sqlite_db import SIZE, database
from migrator.guest import trace
from migrator.workload.check import check_answers
from migrator.workload.queries import KINDS

from .conftest import TOKEN, run_guest


@pytest.fixture(scope="module")
def db_source():
    db = database()
    proc, url = start_source(f"{SIZE >> 20}MiB", seed=5, token=TOKEN, extra_args=["--image", str(db)])
    yield db, url
    stop_daemon(proc)


@pytest.fixture
def db_dest_factory(db_source):
    from .conftest import Dest

    started = []

    def make(mode: str):
        d = Dest(db_source[1], mode)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


def test_answers_over_migrated_memory_equal_a_local_copy_of_every_kind_and_the_reads_replay(
        db_source, db_dest_factory, pool_2m, tmp_path):
    db, _ = db_source
    recorded = tmp_path / "sqlite.trace"
    r = run_guest(db_dest_factory("hgm"), "--workload", "sqlite", "--vcpus", "2", "--rate",
                  "2000", "--after", "0.3", "--record", str(recorded), timeout=120)
    assert r["migration"]["phase"] == "complete" and r["verify"]["mismatched_pages"] == 0
    w = r["workload"]
    assert not w["errors"] and w["queries"]["total"] > 0 and w["during"]["count"] > 0
    check = check_answers(db, w["answers"])
    assert check["checked"] == len(w["answers"]) > 0
    assert all(check["checked_by_kind"][k] > 0 for k in KINDS), check
    assert check["wrong"] == 0, check["wrong_first"]
    # the check can fail: one wrong checksum is caught
    kind, param, rows, got = w["answers"][0]
    assert check_answers(db, [[kind, param, rows, got ^ 1]])["wrong"] == 1
    # faults while memory migrated show as time off the CPU in queries
    assert r["vcpu_stall_seconds"]["count"] > 0
    assert r["after_migration"]["queries_per_second"] > 0

    # the reads the queries made are a trace of 4 KiB pages of the database...
    body = json.loads(recorded.read_text())
    assert body["schema"] == trace.SCHEMA and len(body["vcpus"]) == 2
    pages = SIZE // 4096
    replay = trace.load(recorded, pages)
    assert all(v.pages and not any(v.writes) for v in replay)
    assert {0} <= set(replay[0].pages)  # page 1 of the database: its header and schema root
    # ...that a pattern guest replays in another mode
    again = run_guest(db_dest_factory("hugepage"), "--replay", str(recorded), timeout=120)
    assert again["migration"]["phase"] == "complete"
    assert again["accesses_per_vcpu"] == len(replay[0].pages)
    assert again["verify"]["mismatched_pages"] == 0


def test_a_guest_image_that_is_not_a_database_is_named(source, dest_factory):
    # the e2e source serves a synthetic image: SQLite finds no database in it
    r = run_guest(dest_factory("hgm"), "--workload", "sqlite", "--vcpus", "1", "--after", "0.1",
                  timeout=120)
    assert r["workload"]["errors"]
    assert "migrator workload build-sqlite" in r["workload"]["errors"][0]

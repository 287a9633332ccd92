"""`migrator workload build-sqlite`: a deterministic database of exactly the size asked, whose
queries use the indexes they are meant to."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from migrator.workload import database, queries


def _build(tmp_path, name: str, size: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "migrator.cli", "workload", "build-sqlite",
                           "--size", size, "--out", str(tmp_path / name), "--json"],
                          capture_output=True, text=True, timeout=120)


def test_same_size_gives_the_same_bytes_and_exactly_that_size(tmp_path):
    a, b = _build(tmp_path, "a.db", "8MiB"), _build(tmp_path, "b.db", "8MiB")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    built = json.loads(a.stdout)
    assert (tmp_path / "a.db").read_bytes() == (tmp_path / "b.db").read_bytes()
    assert (tmp_path / "a.db").stat().st_size == 8 << 20
    assert 0.9 * (8 << 20) < built["database_bytes"] <= 8 << 20  # the database fills it
    db = sqlite3.connect(tmp_path / "a.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute(queries.META_SQL).fetchone() == (
        built["customers"], built["items"], built["orders"], built["orders"] * 4 + 3)
    assert db.execute("SELECT count(*) FROM orders").fetchone() == (built["orders"],)


def test_each_query_kind_goes_through_its_index(tmp_path):
    out = tmp_path / "q.db"
    database.build(4 << 20, out)
    db = sqlite3.connect(out)
    plans = [" ".join(r[-1] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}",
                                                 (1, 2) if "?2" in sql else (1,)))
             for sql in queries.SQL]
    assert "USING INDEX customers_code" in plans[0]
    assert "USING INDEX orders_placed" in plans[1]
    assert "USING INDEX orders_customer" in plans[2]


@pytest.mark.parametrize("size", ["3MiB", "5MiB", "2MiB"])
def test_a_size_that_is_not_whole_2mib_pages_or_too_small_is_refused(tmp_path, size):
    done = _build(tmp_path, "x.db", size)
    assert done.returncode != 0
    assert "a multiple of 2 MiB, at least 4 MiB" in done.stderr
    assert not (tmp_path / "x.db").exists()


def test_mix_must_be_three_whole_weights():
    assert queries.parse_mix("70:20:10") == (70, 20, 10)
    for bad in ("70:20", "a:b:c", "0:0:0", "-1:2:3"):
        with pytest.raises(ValueError, match="point:range:join"):
            queries.parse_mix(bad)

"""`migrator experiment --workload sqlite`: every default mode against a baseline run with all
memory local; query latency during postcopy and after, the slowdown, the rate after the
migration relative to 1 GiB-mapped memory, the answers checked; the table, report and plot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers.sqlite_db import SIZE, database
from migrator.workload.queries import KINDS


def test_sqlite_query_latency_during_postcopy_after_it_and_without_it_in_every_mode(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "migrator.cli", "experiment", "--workload",
                           "sqlite", "--memory", f"{SIZE >> 20}MiB", "--hugepage-size", "2M",
                           "--database", str(database()), "--vcpus", "2", "--after", "0.5",
                           "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout)
    assert r["config"]["workload"]["name"] == "sqlite"
    modes = {m["mode"]: m for m in r["modes"]}
    assert set(modes) == {"hgm", "hugepage", "thp"}
    base = r["baseline"]
    assert base["mapping"]["page_label"] in ("1G", "2M", "4K")
    assert base["workload"]["during"]["count"] > 0 and base["workload"]["answers_check"]["wrong"] == 0
    for name, m in modes.items():
        assert m["phase"] == "complete" and m["mismatched_pages"] == 0, name
        w = m["workload"]
        assert w["queries"]["total"] == sum(w["queries"][k] for k in KINDS) > 0
        assert w["during"]["count"] > 0 and w["after"]["count"] > 0, name
        assert w["during"]["p99"] > 0 and w["after"]["p99"] > 0
        b = w["baseline"]
        assert b["p99"] == base["workload"]["during"]["p99"] > 0
        assert w["slowdown_p99"] == pytest.approx(w["during"]["p99"] / b["p99"])
        # measured during postcopy, not the baseline's: the queries that met a fault waited
        # for it off the CPU, and the slowest of them took longer than a typical local query
        assert m["vcpu_stall_seconds"]["count"] > 0, name
        assert w["during"]["max"] > b["p50"], name
        assert w["answers_check"]["wrong"] == 0
        assert all(w["answers_check"]["checked_by_kind"][k] > 0 for k in KINDS)
        # the rate once memory has arrived, relative to the baseline's 1 GiB-mapped (or the
        # largest pages it could have) memory
        assert w["after_rate"] > 0 and w["after_rate_vs_1g"] == pytest.approx(
            w["after_rate"] / base["after_migration"]["queries_per_second"])
        assert m["after_migration"]["vs_1g"] == w["after_rate_vs_1g"]
    report = (out / "report.md").read_text()
    assert "query p99 slowdown (postcopy / baseline)" in report
    assert "MADV_COLLAPSE" in report and "query-latency-cdf.png" in report
    assert (out / "query-latency-cdf.png").stat().st_size > 0
    samples = json.loads((out / "samples-baseline.json").read_text())
    assert len(samples["query_latency_seconds"]) == base["workload"]["during"]["count"]


@pytest.mark.parametrize("args, message", [
    (["--workload", "sqlite", "--poison", "0.001"], "a query reading poisoned memory"),
    (["--database", "x.db"], "--database is the sqlite workload's"),
    (["--workload", "sqlite", "--database", "missing.db"], "is not a file, not --memory"),
])
def test_sqlite_runs_that_cannot_work_are_refused_before_anything_starts(tmp_path, args, message):
    done = subprocess.run([sys.executable, "-m", "migrator.cli", "experiment", "--memory",
                           "64MiB", "--hugepage-size", "2M", "--out", str(tmp_path / "o"), *args],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1 and message in done.stderr
    assert not (tmp_path / "o").exists()

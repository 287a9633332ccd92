"""`migrator guest --baseline`: the guest with all memory local, on the largest pages it can
have, and the errors the workload options give."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from migrator.workload import database


def _guest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "migrator.cli", "guest", *args],
                          capture_output=True, text=True, timeout=120)


def test_baseline_of_a_pattern_measures_the_access_rate_on_the_pages_it_got():
    done = _guest("--baseline", "--memory", "8MiB", "--after", "0.2", "--json")
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["mapping"]["page_label"] in ("1G", "2M", "4K")
    assert (r["mapping"]["hugetlb_bytes"] > 0) == (r["mapping"]["page_label"] != "4K")
    assert r["after_migration"]["accesses_per_second"] > 0 and r["after_migration"]["rounds"] >= 1


def test_baseline_of_sqlite_queries_the_database_with_every_kind(tmp_path):
    db = database.build(4 << 20, tmp_path / "g.db")["path"]
    done = _guest("--baseline", "--workload", "sqlite", "--image", db, "--vcpus", "2",
                  "--after", "0.3", "--json")
    assert done.returncode == 0, done.stderr
    w = json.loads(done.stdout)["workload"]
    assert w["during"]["count"] == w["queries"]["total"] > 0 and w["after"]["count"] == 0
    assert all(w["queries"][k] > 0 for k in ("point", "range", "join")) and not w["errors"]


@pytest.mark.parametrize("args, message", [
    (["--workload", "sqlite"], "--dest-socket is required (or --baseline"),
    (["--baseline", "--workload", "sqlite"], "needs --image FILE"),
    (["--baseline"], "--baseline needs --image FILE or --memory SIZE"),
    (["--dest-socket", "/nonexistent", "--workload", "sqlite", "--replay", "t.json"],
     "drop --workload sqlite"),
    (["--baseline", "--memory", "8MiB", "--mix", "70:30"], "point:range:join"),
    (["--baseline", "--memory", "8MiB", "--rate", "-1"], "queries per second, 0 or more"),
])
def test_workload_options_that_cannot_work_are_named(args, message):
    done = _guest(*args)
    assert done.returncode != 0
    assert message in done.stderr

"""The load-test scenarios, short: they stop by themselves, verify every migration and write a
summary with faults/s, latency quantiles per mode, the source's CPU and memory, and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHORT = ["--vcpus", "2", "--memory", "64MiB", "--hugepage-size", "2M", "--accesses", "300"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: hugetlb pools, uffd")


def scenario(name: str, *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess,
                                                                  dict]:
    out = Path(args[args.index("--out") + 1])
    done = subprocess.run([sys.executable, "-m", f"loadtests.{name}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    summary = out / "summary.json"
    assert summary.exists(), f"no summary ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done, json.loads(summary.read_text())


def _check_summary(s: dict, migrations: int) -> None:
    assert s["ok"], json.dumps(s["errors"], indent=1)
    assert s["errors"] == []
    assert len(s["migrations"]) == migrations
    for m in s["migrations"]:
        assert m["ok"] and m["phase"] == "complete"
        assert m["mismatched_pages"] == 0 and m["verified_pages"] == m["pages_total"]
        assert m["guest_verify"]["mismatched_pages"] == 0
    assert set(s["per_mode"]) == {"hgm", "hugepage"}
    for mode in s["per_mode"].values():
        assert mode["verified"] == mode["migrations"] > 0
        assert mode["faults"] > 0 and mode["faults_per_second"] > 0
        lat = mode["fault_latency_seconds"]
        assert lat["count"] == mode["faults"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    src = s["processes"]["source"]
    assert src["cpu_seconds"] > 0 and src["rss_peak_bytes"] >= 64 << 20  # it holds the image


def test_many_guests_against_one_destination_per_mode(tmp_path):
    done, s = scenario("many_guests", "--guests", "3", *SHORT, "--time-limit", "50",
                       "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    _check_summary(s, 3)
    assert [m["mode"] for m in s["migrations"]] == ["hgm", "hugepage", "hgm"]
    assert len({m["pattern"] for m in s["migrations"]}) == 3  # mixed patterns
    assert len({m["dest"] for m in s["migrations"]}) == 2  # one destination per mode
    table = (tmp_path / "summary.txt").read_text()
    assert "faults/s" in table and "errors: none" in table and "source" in table


def test_many_destinations_against_one_source(tmp_path):
    done, s = scenario("many_dests", "--dests", "3", *SHORT, "--time-limit", "50",
                       "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    _check_summary(s, 3)
    assert len({m["dest"] for m in s["migrations"]}) == 3
    assert {"dest-0-hgm", "dest-1-hugepage", "dest-2-hgm"} <= set(s["processes"])


def test_a_scenario_stops_at_its_time_limit_and_says_so(tmp_path):
    began = time.monotonic()
    done, s = scenario("many_guests", "--guests", "1", "--modes", "hgm", "--vcpus", "1",
                       "--memory", "64MiB", "--accesses", "50000000", "--time-limit", "5",
                       "--out", str(tmp_path))
    assert time.monotonic() - began < 30
    assert done.returncode == 1
    assert not s["ok"]
    assert any("time limit" in e for e in s["errors"]), s["errors"]

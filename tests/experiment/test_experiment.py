"""`migrator experiment` end to end: the three modes, results.json as documented, memory errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from migrator.host import pools

SUMMARY = {"count", "p50", "p90", "p99", "max", "total"}


def _experiment(tmp_path, *args: str, status: int = 0) -> dict:
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "migrator.cli", "experiment", "--memory",
                           "128MiB", "--hugepage-size", "2M", "--accesses", "600", "--vcpus",
                           "2", "--out", str(out), "--json", *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == status, done.stderr[-3000:]
    if status:
        assert "NOT VERIFIED" in done.stderr, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert json.loads((out / "results.json").read_text()) == results
    return results


def test_poison_costs_a_huge_page_without_hgm_and_4k_with_it(tmp_path):
    before = {size: p["total"] for size, p in pools.snapshot().items()}
    r = _experiment(tmp_path, "--poison-pages", "10,600,5000")
    assert {size: p["total"] for size, p in pools.snapshot().items()} == before  # given back
    modes = {m["mode"]: m for m in r["modes"]}
    assert set(modes) == {"hgm", "hugepage", "thp"}  # the default: all three
    for m in modes.values():
        assert m["phase"] == "complete" and m["mismatched_pages"] == 0
        assert SUMMARY <= set(m["fault_latency_seconds"]) and SUMMARY <= set(m["vcpu_stall_seconds"])
        assert m["poison"]["errors"] == 3
    assert modes["hgm"]["backing"] == "shmem-emulated-hgm"
    assert modes["hgm"]["poison"]["bytes_inaccessible"] == 3 * 4096
    assert modes["hugepage"]["backing"] == "hugetlb-2M"
    assert modes["hugepage"]["poison"]["bytes_inaccessible"] == 3 * (2 << 20)
    assert r["poison"]["bytes_inaccessible_ratio_hugepage_to_hgm"] == pytest.approx(512)
    # thp: each error costs 4 KiB, and its 2 MiB range stays at 4 KiB mappings (pages 10, 600
    # and 5000 are in three ranges): counted, and read back from the guest's smaps
    thp = modes["thp"]
    assert thp["poison"]["bytes_inaccessible"] == 3 * 4096
    assert r["poison"]["per_mode"]["thp"]["bytes_inaccessible"] == 3 * 4096
    c = thp["collapse"]
    assert (c["skipped_poisoned"], c["collapsed"], c["failed"]) == (3, 64 - 3, 0)
    assert c["huge_mapped"]["pmd_mapped_bytes"] == (128 - 3 * 2) << 20
    assert thp["after_migration"] is None  # no access rate over poisoned memory
    assert r["host"]["hgm"] is False and r["host"]["hgm_detection"]["method"].startswith("madvise")


def test_pages_served_wrong_once_are_refetched_in_every_mode_and_the_run_is_verified(tmp_path):
    r = _experiment(tmp_path, "--inject-corruption", "0.01")
    assert {m["mode"] for m in r["modes"]} == {"hgm", "hugepage", "thp"}
    assert r["config"]["inject_corruption"]["rate"] == 0.01
    for m in r["modes"]:
        assert m["phase"] == "complete" and m["mismatched_pages"] == 0, m["error"]
        assert m["refetched_pages"] > 0, m["mode"]  # wrong pages were caught and fetched again
        v = m["guest_verify"]  # the guest checked all of its memory, not a sample
        assert v["pages_checked"] + v["pages_written"] == m["pages_total"]
        assert v["mismatched_pages"] == 0 and v["writes_lost"] == 0
        assert m["guest_exit_status"] == 0 and m["problems"] == []


def test_a_page_always_wrong_fails_the_run_which_says_why(tmp_path):
    r = _experiment(tmp_path, "--modes", "hgm", "--inject-corruption-pages", "20000-20099",
                    status=1)
    (m,) = r["modes"]
    assert m["phase"] == "failed" and "differ from the manifest" in m["error"]
    assert m["problems"] and m["guest_exit_status"] == 1

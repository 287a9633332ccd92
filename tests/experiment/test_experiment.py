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


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            kids = open(f"/proc/{p}/task/{p}/children").read().split()
        except OSError:
            continue
        out.update(map(int, kids))
        todo.extend(map(int, kids))
    return out


def _role(pid: int) -> str | None:
    """The migrator subcommand a process runs (python -m migrator.cli ROLE ...), if any."""
    try:
        argv = open(f"/proc/{pid}/cmdline").read().split("\0")
    except OSError:
        return None
    return argv[3] if argv[1:3] == ["-m", "migrator.cli"] and len(argv) > 3 else None


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_sigterm_stops_the_daemons_and_gives_the_huge_pages_back(tmp_path):
    # a runner ended by SIGTERM (a sweep's, a Job's) must not leave its daemons and the
    # huge pages it reserved: SIGTERM runs every `finally`, as SIGINT does
    import os
    import signal
    import time

    from cffi_uffd import SIZE_2M, hugepages

    before = hugepages.pool(SIZE_2M).persistent
    run = subprocess.Popen([sys.executable, "-m", "migrator.cli", "experiment", "--memory",
                            "128MiB", "--hugepage-size", "2M", "--modes", "hugepage",
                            "--accesses", "2000000", "--vcpus", "2", "--out",
                            str(tmp_path / "run"), "--json"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:  # until the guest runs: the source, the destination and the guest are up
            kids = _descendants(run.pid)
            if {"source", "dest", "guest"} <= {_role(k) for k in kids}:
                break
            assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()[-2000:]
            time.sleep(0.05)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) != 0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    left = [k for k in kids if _alive(k)]
    for k in left:  # by PID, so that a failure here leaves nothing behind either
        os.kill(k, signal.SIGKILL)
    assert not left, f"daemons left running after SIGTERM: {[_role(k) for k in left]}"
    assert hugepages.pool(SIZE_2M).persistent == before

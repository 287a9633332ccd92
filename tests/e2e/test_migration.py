"""End-to-end migrations: source, destination and guest processes on loopback, both modes."""

from __future__ import annotations

import pytest

from cffi_uffd import SIZE_1G, SIZE_2M
from migrator.client.http import fetch_manifest
from migrator.host import pools
from migrator.protocol.manifest import DATA

from .conftest import IMAGE_BYTES, TOKEN, Dest, run_guest


def _assert_clean(report: dict, pages_total: int) -> dict:
    m = report["migration"]
    assert m["phase"] == "complete", m.get("error")
    assert m["verified_pages"] == m["pages_total"] == pages_total
    assert m["mismatched_pages"] == 0
    assert report["verify"]["mismatched_pages"] == 0
    v = report["verify"]  # every page the guest did not write was checked
    assert v["pages_checked"] + v["pages_written"] == pages_total and v["pages_written"] > 0
    assert report["verify"]["writes_lost"] == 0
    return m


@pytest.mark.parametrize("mode", ["hgm", "hugepage"])
def test_both_modes_on_2m_migrate_every_page_once_and_verify(source, pool_2m, dest_factory, mode):
    manifest = fetch_manifest(source, TOKEN)
    dest = dest_factory(mode, SIZE_2M)
    report = run_guest(dest, "--vcpus", "4", "--pattern", "zipf", "--accesses", "3000",
                       "--write-ratio", "0.3")
    m = _assert_clean(report, manifest.pages)
    assert m["backing"] == ("shmem-emulated-hgm" if mode == "hgm" else "hugetlb-2M")
    assert m["granularity_bytes"] == (4096 if mode == "hgm" else SIZE_2M)
    assert m["faults"] > 0 and report["verify"]["writes_checked"] > 0
    # Zero pages never travel; every data page travels exactly once (no refetch was needed).
    data_bytes = manifest.kinds.count(DATA) * 4096
    assert m["zero_pages"] > 0
    assert m["refetched_pages"] == 0
    assert m["bytes_urgent"] + m["bytes_background"] == data_bytes
    assert m["pages_urgent"] + m["pages_background"] == manifest.pages


def test_hugepage_mode_on_1g_pages(tmp_path):
    from helpers.daemons import start_source, stop_daemon

    with pools.reserved(SIZE_1G, 1) as got:
        if got < 1:
            pytest.skip("the kernel could not reserve a 1 GiB page (fragmented memory)")
        proc, url = start_source("1GiB", seed=11, token=TOKEN)
        dest = None
        try:
            dest = Dest(url, "hugepage", SIZE_1G)
            report = run_guest(dest, "--vcpus", "2", "--pattern", "uniform", "--accesses", "200")
            m = _assert_clean(report, SIZE_1G // 4096)
            assert m["backing"] == "hugetlb-1G" and m["granularity_bytes"] == SIZE_1G
            # One 1 GiB page: however many vCPUs faulted, it was fetched once.
            assert m["pages_urgent"] + m["pages_background"] == SIZE_1G // 4096
        finally:
            if dest:
                dest.stop()
            stop_daemon(proc)


def test_faults_racing_the_background_pull_are_installed_once(source, pool_2m, dest_factory):
    # Sequential vCPUs start where the puller starts, so faults land on granules it is
    # installing at that moment; they must wait for that install, not fetch again. The pull
    # keeps going while faults are served (else, standing back, it sometimes raced no fault).
    manifest = fetch_manifest(source, TOKEN)
    dest = dest_factory("hugepage", SIZE_2M, "--no-background-preempt")
    report = run_guest(dest, "--vcpus", "4", "--pattern", "sequential", "--accesses", "4000",
                       "--write-ratio", "0.5")
    m = _assert_clean(report, manifest.pages)
    assert m["pages_urgent"] + m["pages_background"] == manifest.pages
    assert m["refetched_pages"] == 0
    assert m["faults_waited_on_background"] > 0  # the premise: a race with the puller happened


def test_guest_writes_after_install_survive_to_the_end(source, dest_factory):
    dest = dest_factory("hgm")
    report = run_guest(dest, "--vcpus", "2", "--pattern", "hotset", "--accesses", "5000",
                       "--write-ratio", "1.0")
    _assert_clean(report, fetch_manifest(source, TOKEN).pages)
    assert report["verify"]["writes_checked"] > 1000


def test_trace_recorded_in_one_mode_replays_the_same_faults_in_the_other(source, pool_2m,
                                                                          dest_factory, tmp_path):
    import json as _json

    trace = tmp_path / "trace.json"
    first = run_guest(dest_factory("hgm"), "--vcpus", "2", "--pattern", "hotset",
                      "--accesses", "800", "--write-ratio", "0.25", "--record", str(trace))
    recorded = _json.loads(trace.read_text())
    assert [len(v["pages"]) for v in recorded["vcpus"]] == [800, 800]
    assert all(len(v["latency_ns"]) == 800 for v in recorded["vcpus"])
    replay = run_guest(dest_factory("hugepage", SIZE_2M), "--replay", str(trace))
    _assert_clean(replay, first["migration"]["pages_total"])
    assert replay["pattern"] == f"trace {trace}" and replay["vcpus"] == 2
    assert replay["verify"]["writes_checked"] == first["verify"]["writes_checked"]


def test_hgm_on_shmem_migrates_an_image_smaller_than_the_1g_page_it_was_told(source,
                                                                             dest_factory):
    # --hugepage-size 1G (the default) with a 128 MiB image: shmem has 4 KiB pages, so the
    # size of a hugetlb page does not apply to it
    dest = dest_factory("hgm", 1 << 30)
    backing = dest.status()["backing"]
    if backing["backing"] != "shmem-emulated-hgm":
        pytest.skip(f"this kernel has HGM: hgm runs on {backing['backing']}")
    report = run_guest(dest, "--vcpus", "1", "--accesses", "200")
    assert report["migration"]["phase"] == "complete"
    assert report["migration"]["verified_pages"] == IMAGE_BYTES // 4096

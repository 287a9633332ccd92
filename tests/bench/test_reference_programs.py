"""The reference programs on the real kernel, briefly: each measures, verifies every page, and
prints the JSON the bench reads. No timing is asserted: speed goals live in the bench's ratios."""

from __future__ import annotations

import pytest

from cffi_uffd import PAGE_SIZE, SIZE_2M
from migrator.bench import floors
from migrator.host import pools
from migrator.protocol.manifest import DATA, ZERO

PAGES = 8192  # 32 MiB


def _kinds(pages: int) -> bytes:
    """Runs of data and zero pages, as in a manifest: 3 data, 1 zero, ..."""
    return bytes(ZERO if i % 4 == 3 else DATA for i in range(pages))


@pytest.fixture
def kinds(tmp_path):
    path = tmp_path / "image.kinds"
    path.write_bytes(_kinds(PAGES))
    return path


def _latencies_are_ordered(r: dict) -> None:
    assert 0 < r["p50_ns"] <= r["p90_ns"] <= r["p99_ns"] <= r["max_ns"]
    assert r["faults_per_s"] > 0 and r["seconds"] > 0


def test_ref_fault_fetches_every_data_page_a_toucher_faults_on(kinds):
    r = floors.ref_fault(kinds, touches=300, threads=1, data_only=True)
    assert r["program"] == "ref-fault" and r["backing"] == "shmem"
    assert r["touches"] == r["faults"] == 300
    assert r["zero_touches"] == r["zero_faults"] == 0
    assert r["mismatched"] == 0 and r["bulk"] is None
    _latencies_are_ordered(r)


def test_ref_fault_with_four_threads_faults_on_zero_pages_without_a_request(kinds):
    r = floors.ref_fault(kinds, touches=200, threads=4, data_only=False)
    assert r["threads"] == 4 and r["touches"] == r["faults"] == 800
    assert r["zero_faults"] == r["zero_touches"] > 0  # a quarter of the pages are zero
    _latencies_are_ordered(r)


def test_ref_fault_streams_in_bulk_while_faults_happen_going_round_its_region(kinds):
    r = floors.ref_fault(kinds, touches=2000, threads=1, data_only=True, bulk_bytes=8 << 20)
    bulk = r["bulk"]
    assert bulk["region_bytes"] == 8 << 20 and bulk["nice"] == 10
    assert bulk["bytes"] > 0 and bulk["bytes"] % (4 << 20) == 0 and bulk["bytes_per_s"] > 0
    assert bulk["laps"] == (bulk["bytes"] - 1) // (8 << 20)  # unmapped and installed again
    assert r["mismatched"] == 0
    _latencies_are_ordered(r)


def test_ref_bulk_moves_only_the_data_pages_and_installs_every_chunk(kinds):
    r = floors.ref_bulk(kinds, "shmem")
    assert r["program"] == "ref-bulk" and r["backing"] == "shmem" and r["populate"] is True
    assert r["bytes"] == PAGES * PAGE_SIZE
    assert r["data_bytes"] == _kinds(PAGES).count(DATA) * PAGE_SIZE
    assert r["chunks"] == PAGES * PAGE_SIZE // r["chunk_bytes"] == 8
    assert r["mismatched"] == 0 and r["bytes_per_s"] == pytest.approx(
        r["data_bytes"] / r["seconds"], rel=1e-3)
    assert sum(r["stage_seconds"].values()) <= r["seconds"]


def test_ref_huge_fetches_a_huge_pages_data_and_continues_it_whole(tmp_path):
    with pools.reserved(SIZE_2M, 1) as got:
        if got < 1:
            pytest.skip("no 2 MiB huge page could be reserved")
        pages = SIZE_2M // PAGE_SIZE
        path = tmp_path / "huge.kinds"
        path.write_bytes(_kinds(pages))
        r = floors.ref_huge(path, "hugetlb-2M")
    assert r["program"] == "ref-huge" and r["backing"] == "hugetlb-2M"
    assert r["bytes"] == SIZE_2M and r["data_bytes"] == _kinds(pages).count(DATA) * PAGE_SIZE
    assert r["runs"] == pages // 4  # one request per run of data pages
    assert r["mismatched"] == 0 and r["seconds"] > 0
    stages = r["stage_seconds"]
    assert set(stages) == {"queue", "fetch_and_verify", "verify_zero_pages", "install", "wake"}
    assert sum(stages.values()) == pytest.approx(r["seconds"], abs=2e-6)


def test_a_reference_program_that_cannot_run_is_a_failure_with_its_reason(tmp_path):
    empty = tmp_path / "none.kinds"
    empty.write_bytes(_kinds(4))
    with pytest.raises(floors.FloorFailed, match="more touches than pages"):
        floors.ref_fault(empty, touches=100)

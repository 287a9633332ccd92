"""The thp mode on the real kernel, in-process: 4 KiB MINOR faults inside 2 MiB shmem THP
folios, and the collapser (MADV_COLLAPSE through process_madvise, here on this very process)
collapsing each 2 MiB range once the C loops have installed all of it.

Every test reads what the kernel did from /proc/self/smaps (Rss, ShmemPmdMapped) and the
guest view's bytes, never from our own counters alone.
"""

from __future__ import annotations

import os
import time

import pytest

from cffi_uffd import SIZE_2M, PageExists, collapse
from migrator import smaps
from migrator._dataplane import lib
from migrator.dest.collapse import Collapser
from migrator.dest.dataplane import PRESENT, BackgroundPolicy
from migrator.protocol import PAGE_SIZE

from dest.dataplane_rig import Rig
from helpers.thp import shmem_thp  # noqa: F401  (fixture)

RANGE_PAGES = SIZE_2M // PAGE_SIZE


@pytest.fixture
def thp_rig(shmem_thp):  # noqa: F811
    made: list[Rig] = []
    collapsers: list[Collapser] = []

    def make(ranges: int, **policy) -> tuple[Rig, Collapser]:
        r = Rig(ranges * RANGE_PAGES, BackgroundPolicy(**policy), thp=True)
        made.append(r)
        c = Collapser(r.plane, os.getpid(), r.guest.address, r.size, SIZE_2M, ("thp", "shmem-thp-2M"))
        collapsers.append(c)
        return r, c

    yield make
    for c in collapsers:
        c.stop()
    for r in made:
        r.close()


def _guest_mapping(rig: Rig) -> dict[str, int]:
    return smaps.mapping(rig.guest.address)


def _huge_folios(rig: Rig) -> int:
    """Bytes of the memfd in 2 MiB folios: the alias view was faulted in through
    MADV_HUGEPAGE, so it maps each huge folio by PMD."""
    return smaps.mapping(rig.alias.address)["ShmemPmdMapped"]


def test_4k_continue_inside_a_thp_folio_maps_4k_only(thp_rig):
    rig, _ = thp_rig(1)
    assert _huge_folios(rig) == SIZE_2M, "the memfd is one 2 MiB folio"
    rig.alias.view[:rig.size] = rig.image
    for page in (0, 1, 300):
        rig.uffd.continue_(rig.guest.address + page * PAGE_SIZE, PAGE_SIZE)
    m = _guest_mapping(rig)
    assert m["Rss"] == 3 * PAGE_SIZE and m["ShmemPmdMapped"] == 0
    assert rig.guest_page(300) == rig.image_page(300)


def test_collapse_maps_pages_never_installed_so_only_complete_ranges_are_collapsed(thp_rig):
    """Why dest_collapse.c waits for the last granule: the collapse skips empty PTEs and maps
    the whole folio, so a page never CONTINUEd becomes readable without a fault."""
    rig, _ = thp_rig(1)
    rig.uffd.continue_(rig.guest.address, PAGE_SIZE)
    rig.alias.view[5 * PAGE_SIZE:6 * PAGE_SIZE] = rig.image_page(5)  # never installed
    pidfd = os.pidfd_open(os.getpid())
    try:
        collapse(rig.guest.address, SIZE_2M, pidfd)
    finally:
        os.close(pidfd)
    assert _guest_mapping(rig)["ShmemPmdMapped"] == SIZE_2M
    # read without any fault event: the fault loop would never have been asked
    assert rig.guest_page(5) == rig.image_page(5)
    assert rig.uffd.read_events(timeout=0) == []


def test_collapser_collapses_each_range_as_it_completes_during_the_pull(thp_rig):
    rig, collapser = thp_rig(8, cap_bytes_per_s=24 << 20, chunk_bytes=1 << 20)
    collapser.start()
    rig.loop_against_real_source("faults")
    pull = rig.loop_against_real_source("background")
    vcpus = [rig.touch_pages(list(range(v, rig.pages, 97))) for v in range(3)]
    for t in vcpus:
        t.join(timeout=30)
        assert not t.is_alive()
    pull.join(timeout=30)
    assert rig.plane.complete
    assert collapser.drain(10)
    s = collapser.summary()
    assert s["folios"] == s["complete"] == s["collapsed"] == 8
    assert s["failed"] == s["skipped_poisoned"] == 0
    # the pull is capped at 24 MiB/s: most ranges were collapsed while others still arrived
    assert s["collapsed_during_migration"] >= 4
    assert 0 < s["collapse_seconds"]["p50"] <= s["collapse_seconds"]["p99"]
    assert _guest_mapping(rig)["ShmemPmdMapped"] == rig.size
    assert bytes(rig.guest.view[:rig.size]) == rig.image


def test_a_fault_pending_across_a_collapse_is_woken_by_the_fault_loop(thp_rig):
    """The race of a collapse with a fault on the same 2 MiB: a vCPU's MINOR event can still be
    queued when its range is installed without waking it and collapsed. CONTINUE then finds the
    PMD (EEXIST), which wakes nobody; the fault loop must wake the vCPU itself."""
    rig, collapser = thp_rig(2)
    collapser.start()
    rig.alias.view[:SIZE_2M] = rig.image[:SIZE_2M]
    vcpu = rig.touch_pages([7])
    time.sleep(0.3)
    assert vcpu.is_alive(), "the vCPU waits on its fault"
    rig.uffd.continue_(rig.guest.address, SIZE_2M, dontwake=True)
    lib.dp_mark_done(rig.plane._m, 0, RANGE_PAGES, PRESENT)  # installed by "another resolver"
    assert collapser.drain(10) and collapser.collapsed == 1
    assert _guest_mapping(rig)["ShmemPmdMapped"] == SIZE_2M
    with pytest.raises(PageExists):
        rig.uffd.continue_(rig.guest.address + 7 * PAGE_SIZE, PAGE_SIZE, dontwake=True)
    time.sleep(0.2)
    assert vcpu.is_alive(), "EEXIST woke nobody"
    rig.loop_against_real_source("faults")  # reads the pending event: the granule is present
    vcpu.join(timeout=5)
    assert not vcpu.is_alive(), "the fault loop woke the vCPU"
    assert rig.guest_page(7) == rig.image_page(7)


def test_a_range_with_a_memory_error_is_skipped_and_counted(thp_rig):
    rig, collapser = thp_rig(2)
    collapser.start()
    granule = RANGE_PAGES + 3
    assert rig.plane.claim_for_poison(granule) == 0  # absent
    rig.plane.poison(granule)
    rig.loop_against_real_source("faults")
    pull = rig.loop_against_real_source("background")
    pull.join(timeout=30)
    assert rig.plane.complete and collapser.drain(10)
    s = collapser.summary()
    assert (s["collapsed"], s["skipped_poisoned"], s["failed"]) == (1, 1, 0)
    assert _guest_mapping(rig)["ShmemPmdMapped"] == SIZE_2M  # the first range only

"""migrator.host.pools, the one huge-page pool API: what is available, and pages reserved for
the length of a block, given back by exactly what was added."""

from __future__ import annotations

import os

import pytest

from cffi_uffd import SIZE_2M, Mapping, memfd
from migrator.host import hgm, pools

from .clirun import sysfs_pool


def _available(pool: dict) -> int:
    return max(0, pool["free"] - pool["reserved"])


def test_available_counts_free_pages_no_mapping_has_claimed(root):
    assert pools.available(SIZE_2M) == _available(sysfs_pool(SIZE_2M))


def test_reserved_makes_the_pages_available_and_gives_back_only_what_it_added(pools_restored):
    before = sysfs_pool(SIZE_2M)
    want = _available(before) + 3
    with pools.reserved(SIZE_2M, want) as got:
        assert got == want == pools.available(SIZE_2M)
        assert sysfs_pool(SIZE_2M)["total"] == before["total"] + 3
    assert sysfs_pool(SIZE_2M)["total"] == before["total"]


def test_reserved_keeps_pages_someone_else_reserved_meanwhile(pools_restored):
    before = sysfs_pool(SIZE_2M)
    with pools.reserved(SIZE_2M, _available(before) + 1):
        pools.reserve(SIZE_2M, pools.available(SIZE_2M) + 2)  # another user, inside the block
    assert sysfs_pool(SIZE_2M)["total"] == before["total"] + 2


def test_reserved_gives_back_what_it_added_when_interrupted_inside_the_reservation(
        pools_restored, monkeypatch):
    # a SIGINT can land between the kernel growing the pool and reserve() returning (a sweep
    # interrupted as its next point reserves): the pool grew, and must shrink back
    before = sysfs_pool(SIZE_2M)
    state, calls = pools._state, []

    def interrupted(pool):
        calls.append(pool)
        if len(calls) == 2:  # reserve() describes the pool before, then after growing it
            assert sysfs_pool(SIZE_2M)["total"] == before["total"] + 2
            raise KeyboardInterrupt
        return state(pool)

    monkeypatch.setattr(pools, "_state", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with pools.reserved(SIZE_2M, _available(before) + 2):
            pass
    monkeypatch.undo()
    assert sysfs_pool(SIZE_2M)["total"] == before["total"]


def test_reserved_of_a_size_the_kernel_lacks_is_a_clear_error(root):
    with pytest.raises(ValueError, match="no 4 kB huge pages"):
        with pools.reserved(4096, 1):
            pass


def test_hgm_detection_borrows_a_huge_page_when_none_is_free_and_gives_it_back(pools_restored):
    pools.release(SIZE_2M)  # none available now
    before = sysfs_pool(SIZE_2M)
    assert _available(before) == 0
    found = hgm.detect(SIZE_2M)
    assert found.present is False and "EINVAL" in found.detail, found
    assert sysfs_pool(SIZE_2M) == before


def test_reserved_gives_back_a_page_still_in_use_when_the_last_user_let_go_of_the_pool(
        pools_restored):
    """A process that still maps a huge page when its pool is given back leaves that page as
    surplus, counted in nr_hugepages; growing the pool meanwhile makes it persistent. Given back
    by the persistent count, the block still leaves the pool as it found it once the page is
    unmapped (it used to leave one free page behind)."""
    pools.release(SIZE_2M)
    found = sysfs_pool(SIZE_2M)
    with pools.reserved(SIZE_2M, 1):
        fd = memfd("held", SIZE_2M, SIZE_2M)
        held = Mapping.shared(fd, SIZE_2M, page_size=SIZE_2M)
        os.close(fd)  # the mapping keeps the page
        held.view[0] = 1  # in use
    try:
        assert sysfs_pool(SIZE_2M)["total"] == found["total"] + 1  # surplus, still mapped
        with pools.reserved(SIZE_2M, 2) as got:
            assert got == 2
            held.close()  # its user lets go inside the next block
    finally:
        held.close()
    assert sysfs_pool(SIZE_2M)["total"] == found["total"]

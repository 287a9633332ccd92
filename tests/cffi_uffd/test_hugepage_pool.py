"""Hugetlb pools as sysfs shows them: their sizes, their counts, and setting a pool's total."""

import pytest

from cffi_uffd import SIZE_1G, SIZE_2M, hugepages


def test_the_kernel_offers_2m_and_1g_pools():
    assert {SIZE_2M, SIZE_1G} <= set(hugepages.sizes())


@pytest.mark.parametrize("page_size", [SIZE_2M, SIZE_1G], ids=["2M", "1G"])
def test_set_total_grows_the_pool_by_what_the_kernel_gives_and_back(page_size):
    before = hugepages.pool(page_size)
    try:
        got = hugepages.set_total(page_size, before.total + 1)
        if got == before.total:
            pytest.skip(f"the kernel gave no {page_size >> 20} MiB page (memory fragmented)")
        during = hugepages.pool(page_size)
        assert got == during.total == before.total + 1
        assert during.available == before.available + 1
    finally:
        hugepages.set_total(page_size, before.persistent)
        assert hugepages.pool(page_size).persistent == before.persistent


def test_an_unknown_page_size_is_a_clear_error():
    with pytest.raises(ValueError, match="no 4 kB huge pages"):
        hugepages.pool(4096)

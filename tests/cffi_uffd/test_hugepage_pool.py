"""Hugetlb pools: read, reserve, and give back exactly what was there before."""

import pytest

from cffi_uffd import SIZE_1G, SIZE_2M, hugepages


def test_the_kernel_offers_2m_and_1g_pools():
    assert {SIZE_2M, SIZE_1G} <= set(hugepages.sizes())


@pytest.mark.parametrize("page_size, count", [(SIZE_2M, 3), (SIZE_1G, 1)], ids=["2M", "1G"])
def test_reserve_then_release_restores_the_previous_total(page_size, count):
    before = hugepages.pool(page_size)
    with hugepages.reserved(page_size, count) as got:
        if got < count:
            pytest.skip(f"the kernel gave {got} of {count} {page_size >> 20} MiB pages")
        during = hugepages.pool(page_size)
        assert during.available >= count
        assert during.total == before.total + max(0, count - before.available)
    assert hugepages.pool(page_size).total == before.total


def test_an_unknown_page_size_is_a_clear_error():
    with pytest.raises(ValueError, match="no 4 kB huge pages"):
        hugepages.pool(4096)

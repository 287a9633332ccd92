"""MINOR faults on hugetlb 2 MiB and 1 GiB: only whole huge pages can be CONTINUEd (no HGM)."""

import errno

import pytest

from cffi_uffd import PAGE_SIZE, SIZE_2M, Feature, PageFault, RegisterMode, UffdError

MARK = b"filled through the alias"


@pytest.fixture
def minor_hugetlb(new_uffd, views, huge_page_size):
    uffd = new_uffd()
    uffd.api(Feature.MINOR_HUGETLBFS | Feature.EXACT_ADDRESS)
    v = views(1, huge_page_size)
    uffd.register(v.guest.address, v.guest.length, RegisterMode.MINOR)
    return uffd, v


def test_whole_huge_page_continue_resolves_the_fault(minor_hugetlb, resolver, toucher):
    uffd, v = minor_hugetlb
    size = v.page_size
    offset = size - PAGE_SIZE  # the last 4 KiB of the huge page

    def fill_and_continue(fault: PageFault) -> None:
        v.alias.view[offset:offset + len(MARK)] = MARK
        assert uffd.continue_(v.guest.address, size) == size

    with resolver(uffd, fill_and_continue) as r:
        toucher([v.guest.address + offset]).start_and_finish()
    assert len(r.faults()) == 1 and r.faults()[0].minor
    assert bytes(v.guest.view[offset:offset + len(MARK)]) == MARK


def test_4k_continue_inside_a_huge_page_says_no_hgm(minor_hugetlb):
    uffd, v = minor_hugetlb
    with pytest.raises(UffdError) as info:
        uffd.continue_(v.guest.address + PAGE_SIZE, PAGE_SIZE)
    assert info.value.errno == errno.EINVAL
    assert info.value.operation == "continue"
    assert "no HGM" in str(info.value)


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "rounded"])
def test_exact_address_reports_the_byte_that_faulted(new_uffd, views, huge_2m, resolver,
                                                      toucher, exact):
    # Without EXACT_ADDRESS the kernel rounds hugetlb fault addresses down to the huge page.
    uffd = new_uffd()
    uffd.api(Feature.MINOR_HUGETLBFS | (Feature.EXACT_ADDRESS if exact else Feature(0)))
    v = views(1, SIZE_2M)
    uffd.register(v.guest.address, SIZE_2M, RegisterMode.MINOR)
    target = v.guest.address + 0x12340 + 8
    with resolver(uffd, lambda f: uffd.continue_(v.guest.address, SIZE_2M)) as r:
        toucher([target]).start_and_finish()
    assert [f.address for f in r.faults()] == [target if exact else v.guest.address]

"""MINOR faults on 4 KiB shmem: the toucher faults in the guest view, the handler fills the page
through the alias view and CONTINUEs it."""

import errno
import struct

import pytest

from cffi_uffd import PAGE_SIZE, Feature, PageExists, PageFault, RegisterMode

PAGES = 8


def _pattern(index: int) -> bytes:
    return struct.pack(f"<{PAGE_SIZE // 8}Q", *((index << 32) | w for w in range(PAGE_SIZE // 8)))


@pytest.fixture
def minor_shmem(new_uffd, views):
    uffd = new_uffd()
    uffd.api(Feature.MINOR_SHMEM | Feature.THREAD_ID)
    v = views(PAGES)
    uffd.register(v.guest.address, v.guest.length, RegisterMode.MINOR)
    return uffd, v


def test_toucher_reads_exactly_what_the_handler_filled_through_the_alias(
        minor_shmem, resolver, toucher):
    uffd, v = minor_shmem

    def fill_and_continue(fault: PageFault) -> None:
        index = (fault.address - v.guest.address) // PAGE_SIZE
        offset = index * PAGE_SIZE
        v.alias.view[offset:offset + PAGE_SIZE] = _pattern(index)
        assert uffd.continue_(v.page(index), PAGE_SIZE) == PAGE_SIZE

    page = 5
    words = [v.page(page) + 8 * w for w in range(PAGE_SIZE // 8)]
    with resolver(uffd, fill_and_continue) as r:
        t = toucher(words).start_and_finish()
    faults = r.faults()
    assert [f.address for f in faults] == [v.page(page)]
    assert faults[0].minor and not faults[0].write
    assert t.checksum == sum(struct.unpack(f"<{PAGE_SIZE // 8}Q", _pattern(page))) % 2**64
    offset = page * PAGE_SIZE
    assert bytes(v.guest.view[offset:offset + PAGE_SIZE]) == _pattern(page)


def test_fault_carries_the_toucher_thread_id(minor_shmem, resolver, toucher):
    uffd, v = minor_shmem
    with resolver(uffd, lambda f: uffd.continue_(v.page(0), PAGE_SIZE)) as r:
        t = toucher([v.page(0)]).start_and_finish()
    assert [f.thread_id for f in r.faults()] == [t.tid]


def test_second_continue_of_the_same_page_raises_page_exists(minor_shmem):
    uffd, v = minor_shmem
    assert uffd.continue_(v.page(2), PAGE_SIZE) == PAGE_SIZE
    with pytest.raises(PageExists) as info:
        uffd.continue_(v.page(2), PAGE_SIZE)
    assert info.value.errno == errno.EEXIST
    assert "already mapped" in str(info.value)

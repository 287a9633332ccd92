"""The uapi additions that linux-libc-dev 6.1 lacks (supplied in _cffi_src/uffd.h), proven on the
running kernel: feature bits by handshake and by behaviour, ioctl numbers and layouts by use."""

import pytest

from cffi_uffd import (
    PAGE_SIZE, Feature, Ioctl, Mapping, PageFault, RegisterMode, supported_features,
)
from cffi_uffd._native import ffi, lib

ADDITIONS = [Feature.WP_UNPOPULATED, Feature.POISON, Feature.WP_ASYNC, Feature.MOVE]


def _ioc_size(request: int) -> int:
    return (request >> 16) & 0x3FFF  # asm-generic/ioctl.h: _IOC_SIZESHIFT 16, 14 bits


def test_the_running_kernel_offers_every_addition():
    offered = supported_features().features
    assert [f for f in ADDITIONS if f not in offered] == []


@pytest.mark.parametrize("feature", ADDITIONS, ids=lambda f: f.name)
def test_handshake_requesting_each_addition_succeeds(new_uffd, feature):
    # precheck=False: the kernel itself judges the bit (an unknown bit gives EINVAL).
    assert feature in new_uffd().api(feature, precheck=False).features


@pytest.mark.parametrize("request_name, struct, number", [
    ("UFFDIO_POISON", "struct uffdio_poison", 0x08),
    ("UFFDIO_MOVE", "struct uffdio_move", 0x05),
])
def test_ioctl_numbers_encode_the_struct_size(request_name, struct, number):
    request = getattr(lib, request_name)
    assert request & 0xFF == number
    assert (request >> 8) & 0xFF == 0xAA  # UFFDIO
    assert _ioc_size(request) == ffi.sizeof(struct)


def test_poison_reports_the_bytes_it_updated(new_uffd):
    # `updated` is the last field: a wrong layout would read back garbage here.
    uffd = new_uffd()
    uffd.api(Feature.POISON)
    with Mapping.anonymous(4 * PAGE_SIZE) as m:
        ioctls = uffd.register(m.address, m.length, RegisterMode.MISSING)
        assert Ioctl.POISON in ioctls
        assert uffd.poison(m.address + PAGE_SIZE, 2 * PAGE_SIZE) == 2 * PAGE_SIZE


def test_move_moves_an_anonymous_page(new_uffd):
    uffd = new_uffd()
    uffd.api(Feature.MOVE)
    with Mapping.anonymous(2 * PAGE_SIZE) as dst, Mapping.anonymous(PAGE_SIZE) as src:
        assert Ioctl.MOVE in uffd.register(dst.address, dst.length, RegisterMode.MISSING)
        payload = bytes(range(256)) * (PAGE_SIZE // 256)
        src.view[:] = payload
        assert uffd.move(dst.address + PAGE_SIZE, src.address, PAGE_SIZE) == PAGE_SIZE
        assert bytes(dst.view[PAGE_SIZE:]) == payload
        assert bytes(src.view) == bytes(PAGE_SIZE)  # the source is a hole now


def test_register_masks_include_poison_and_move_where_the_kernel_allows(new_uffd, views, huge_2m):
    uffd = new_uffd()
    uffd.api(Feature.MINOR_SHMEM | Feature.MINOR_HUGETLBFS)
    with Mapping.anonymous(PAGE_SIZE) as anon:
        anon_ioctls = uffd.register(anon.address, anon.length, RegisterMode.MISSING)
        assert Ioctl.POISON | Ioctl.MOVE | Ioctl.COPY | Ioctl.ZEROPAGE in anon_ioctls
        assert Ioctl.CONTINUE not in anon_ioctls  # CONTINUE only on MINOR ranges
        shmem = views(1)
        shmem_ioctls = uffd.register(shmem.guest.address, PAGE_SIZE, RegisterMode.MINOR)
        assert Ioctl.POISON | Ioctl.CONTINUE in shmem_ioctls
        huge = views(1, huge_2m)
        huge_ioctls = uffd.register(huge.guest.address, huge_2m, RegisterMode.MINOR)
        assert Ioctl.POISON | Ioctl.CONTINUE in huge_ioctls
        assert Ioctl.MOVE not in huge_ioctls  # hugetlb gets the basic set only
        assert Ioctl.ZEROPAGE not in huge_ioctls


def test_wp_unpopulated_write_protects_pages_never_touched(new_uffd, resolver, toucher):
    # Without WP_UNPOPULATED, write-protecting an empty anonymous range does nothing and the
    # write below would populate the page silently.
    uffd = new_uffd()
    uffd.api(Feature.WP_UNPOPULATED | Feature.PAGEFAULT_FLAG_WP)
    with Mapping.anonymous(PAGE_SIZE) as m:
        uffd.register(m.address, m.length, RegisterMode.WP)
        uffd.writeprotect(m.address, m.length, True)

        def unprotect(fault: PageFault) -> None:
            uffd.writeprotect(m.address, m.length, False)  # also wakes the writer

        with resolver(uffd, unprotect) as r:
            toucher([m.address], writes=b"\x01", values=[0xC0FFEE]).start_and_finish()
        assert [(f.wp, f.write) for f in r.faults()] == [(True, True)]
        assert int.from_bytes(m.view[:8], "little") == 0xC0FFEE


def test_wp_async_resolves_write_protect_faults_without_a_message(new_uffd, toucher):
    uffd = new_uffd()
    uffd.api(Feature.WP_ASYNC)
    with Mapping.anonymous(PAGE_SIZE) as m:
        m.view[:8] = bytes(8)
        uffd.register(m.address, m.length, RegisterMode.WP)
        uffd.writeprotect(m.address, m.length, True)
        toucher([m.address], writes=b"\x01", values=[7]).start_and_finish()
        assert uffd.read_events(timeout=0) == []
        assert int.from_bytes(m.view[:8], "little") == 7

"""UFFDIO_API, as the kernel's uffd-unit-tests check it: both open paths, unknown bits, twice."""

import errno

import pytest

from cffi_uffd import Feature, FeatureUnsupported, Ioctl, UffdError

UNKNOWN_BIT = 1 << 40  # no kernel defines it


@pytest.mark.parametrize("via", ["syscall", "dev"])
def test_each_open_path_completes_the_handshake(new_uffd, via):
    uffd = new_uffd(via=via)
    assert uffd.opened_via == via
    result = uffd.api(Feature.MINOR_SHMEM | Feature.THREAD_ID)
    assert Feature.MINOR_SHMEM in result.features
    assert result.ioctls & (Ioctl.API | Ioctl.REGISTER | Ioctl.UNREGISTER) == (
        Ioctl.API | Ioctl.REGISTER | Ioctl.UNREGISTER)


def test_auto_prefers_the_syscall_as_root(new_uffd):
    assert new_uffd().opened_via == "syscall"


def test_unknown_feature_is_refused_by_name_before_the_kernel_sees_it(new_uffd):
    with pytest.raises(FeatureUnsupported, match="bit 40"):
        new_uffd().api(Feature.MINOR_SHMEM | UNKNOWN_BIT)


@pytest.mark.parametrize("via", ["syscall", "dev"])
def test_unknown_feature_is_refused_by_the_kernel_with_einval(new_uffd, via):
    with pytest.raises(UffdError) as info:
        new_uffd(via=via).api(UNKNOWN_BIT, precheck=False)
    assert info.value.errno == errno.EINVAL
    assert info.value.operation == "api"


def test_a_second_handshake_on_the_same_descriptor_fails(new_uffd):
    uffd = new_uffd()
    uffd.api(Feature.EVENT_REMOVE)
    with pytest.raises(UffdError) as info:
        uffd.api(Feature.EVENT_REMOVE)
    assert info.value.errno == errno.EINVAL

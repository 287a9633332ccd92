"""Errors carry the operation, the errno name and a sentence a person can act on."""

import errno

import pytest

from cffi_uffd import (
    PAGE_SIZE, Feature, Mapping, MappingChanged, PageExists, RegisterMode, UffdError,
)
from cffi_uffd.errors import raise_for


def test_a_kernel_refusal_names_operation_errno_and_advice(new_uffd):
    uffd = new_uffd()
    uffd.api()
    with Mapping.anonymous(2 * PAGE_SIZE) as m:
        with pytest.raises(UffdError) as info:
            uffd.register(m.address + 1, PAGE_SIZE, RegisterMode.MISSING)
    e = info.value
    assert (e.operation, e.errno, e.errno_name) == ("register", errno.EINVAL, "EINVAL")
    assert "not page aligned" in e.advice
    assert str(e).startswith("register: EINVAL: ")
    assert hex(m.address + 1) in str(e)  # the detail says which range


@pytest.mark.parametrize("err, cls, words", [
    (errno.EEXIST, PageExists, "already mapped"),
    (errno.EAGAIN, MappingChanged, "retry"),
    (errno.EPERM, UffdError, "vm.unprivileged_userfaultfd"),
    (errno.EIO, UffdError, "poisoned"),
    (errno.EFAULT, UffdError, "not mapped"),
], ids=["EEXIST", "EAGAIN", "EPERM", "EIO", "EFAULT"])
def test_each_errno_maps_to_its_class_and_advice(err, cls, words):
    with pytest.raises(cls) as info:
        raise_for("copy", err)
    assert type(info.value) is cls and isinstance(info.value, OSError)
    assert words in info.value.advice and info.value.errno == err


def test_open_errors_name_the_device():
    assert "/dev/userfaultfd" in UffdError("open", errno.ENOENT).advice
    assert "/dev/userfaultfd" in UffdError("open", errno.EACCES).advice


def test_resolving_errors_report_bytes_done(new_uffd):
    uffd = new_uffd()
    uffd.api(Feature.MINOR_SHMEM)
    with Mapping.anonymous(PAGE_SIZE) as m, Mapping.anonymous(PAGE_SIZE) as src:
        uffd.register(m.address, m.length, RegisterMode.MISSING)
        uffd.copy(m.address, src.address, PAGE_SIZE)
        with pytest.raises(PageExists) as info:
            uffd.copy(m.address, src.address, PAGE_SIZE)
    assert info.value.done == 0

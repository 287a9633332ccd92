"""Errors from the kernel as exceptions a person can act on."""

import errno as _errno
import os

# (operation, errno) -> what it means and what to do. Operation "*" applies to any.
_ADVICE: dict[tuple[str, int], str] = {
    ("*", _errno.EEXIST): "the page is already mapped (another resolver installed it first)",
    ("*", _errno.EAGAIN): "the mapping changed under the call (a REMOVE/UNMAP event is pending); "
    "read the pending events, then retry",
    ("*", _errno.EFAULT): "an address is outside the caller's memory or not mapped as registered",
    ("*", _errno.ENOENT): "the range or source page is not present",
    ("*", _errno.ESRCH): "the process that owns the userfaultfd is gone",
    ("*", _errno.ENOMEM): "the kernel could not allocate; for hugetlb, reserve more pages in "
    "/sys/kernel/mm/hugepages/hugepages-*/nr_hugepages",
    ("*", _errno.EIO): "the page is poisoned (hardware error or UFFDIO_POISON) or the mm is exiting",
    ("*", _errno.EPERM): "not permitted: run as root, set sysctl vm.unprivileged_userfaultfd=1, "
    "or grant access to /dev/userfaultfd",
    ("*", _errno.EACCES): "not permitted: grant read/write on /dev/userfaultfd to this user",
    ("*", _errno.ENOSYS): "the kernel was built without CONFIG_USERFAULTFD",
    ("open", _errno.ENOENT): "/dev/userfaultfd does not exist (kernel < 6.1 or CONFIG_USERFAULTFD=n)",
    ("api", _errno.EINVAL): "the kernel refused the API handshake: a requested feature is unknown "
    "to it, or UFFDIO_API was already called on this descriptor",
    ("register", _errno.EINVAL): "the range is not page aligned, or the memory type does not "
    "support this mode (MINOR needs shmem/hugetlb; on hugetlb the range must be huge-page aligned)",
    ("register", _errno.EBUSY): "the range is already registered with another userfaultfd",
    ("continue", _errno.EINVAL): "the range is not huge-page aligned and sized for this hugetlb "
    "mapping: the kernel has no HGM, so hugetlb can only be installed a whole huge page at a time",
    ("poison", _errno.EINVAL): "the range is not aligned to the mapping's page size (hugetlb "
    "accepts only whole huge pages)",
    ("copy", _errno.EINVAL): "the range is not aligned to the mapping's page size",
    ("zeropage", _errno.EINVAL): "ZEROPAGE needs anonymous or shmem memory registered MISSING",
    ("mmap", _errno.ENOMEM): "no memory for the mapping: for hugetlb, reserve pages first "
    "(/sys/kernel/mm/hugepages/hugepages-*/nr_hugepages)",
    ("fallocate", _errno.ENOSPC): "the hugetlb pool is empty: reserve pages first "
    "(/sys/kernel/mm/hugepages/hugepages-*/nr_hugepages)",
    ("madvise", _errno.EINVAL): "the advice is not supported for this mapping by this kernel",
    ("madvise", _errno.EAGAIN): "transient: a page or lock was busy (MADV_COLLAPSE); try again",
    ("process_madvise", _errno.EAGAIN): "transient: a page or lock was busy; try again",
    ("process_madvise", _errno.EPERM): "advising another process needs CAP_SYS_NICE and ptrace "
    "read access to it",
    ("process_madvise", _errno.EINVAL): "the kernel does not take this advice for another process "
    "(MADV_COLLAPSE: 6.1+), or the mapping cannot be huge",
}


class UffdError(OSError):
    """A failed kernel call: which operation, which errno, and what it means."""

    def __init__(self, operation: str, err: int, detail: str = ""):
        self.operation = operation
        self.errno_name = _errno.errorcode.get(err, str(err))
        self.advice = _ADVICE.get((operation, err)) or _ADVICE.get(("*", err)) or os.strerror(err)
        message = f"{operation}: {self.errno_name}: {self.advice}"
        if detail:
            message += f" ({detail})"
        super().__init__(err, message)

    def __str__(self) -> str:
        return self.args[1]


class PageExists(UffdError):
    """EEXIST from a resolving ioctl: someone else installed the page first."""


class MappingChanged(UffdError):
    """EAGAIN from a resolving ioctl: events are pending; read them and retry."""


class FeatureUnsupported(ValueError):
    """A feature was requested that the running kernel does not offer."""


def raise_for(operation: str, err: int, detail: str = "") -> None:
    """Raise the exception class that matches err."""
    cls = {_errno.EEXIST: PageExists, _errno.EAGAIN: MappingChanged}.get(err, UffdError)
    raise cls(operation, err, detail)

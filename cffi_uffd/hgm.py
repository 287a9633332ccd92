"""Detect HugeTLB high-granularity mapping (HGM), a proposal that was never merged.

The only honest probe is the operation itself: madvise(MADV_SPLIT) on a MAP_SHARED hugetlb
mapping. EINVAL means no HGM. userfaultfd feature bit 13 is WP_UNPOPULATED upstream and must
never be read as HGM.
"""

from __future__ import annotations

import errno
import os
from dataclasses import asdict, dataclass

from . import hugepages
from .errors import UffdError
from .memory import SIZE_2M, Mapping, memfd, split


@dataclass(frozen=True)
class HgmDetection:
    present: bool | None  # None: could not be probed
    method: str
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


def _probe(page_size: int) -> HgmDetection:
    method = f"madvise(MADV_SPLIT=26) on a MAP_SHARED hugetlb-{page_size >> 20}M memfd mapping"
    fd = memfd("hgm-probe", page_size, page_size)
    try:
        with Mapping.shared(fd, page_size, page_size=page_size) as m:
            try:
                split(m.address, page_size)
            except UffdError as e:
                if e.errno == errno.EINVAL:
                    return HgmDetection(False, method, "EINVAL: this kernel has no HGM")
                return HgmDetection(None, method, str(e))
            return HgmDetection(True, method, "MADV_SPLIT accepted")
    finally:
        os.close(fd)


def detect(page_size: int = SIZE_2M) -> HgmDetection:
    """Probe for HGM with one free huge page of page_size; making one free is the caller's job
    (present is None, "no free huge page", when there is none)."""
    try:
        if hugepages.pool(page_size).available < 1:
            return HgmDetection(None, "madvise(MADV_SPLIT)", "no free huge page to probe with")
        return _probe(page_size)
    except (OSError, ValueError) as e:
        return HgmDetection(None, "madvise(MADV_SPLIT)", f"could not probe: {e}")

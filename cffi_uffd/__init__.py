"""cffi_uffd: the Linux userfaultfd interface for Python (cffi, API mode).

Knows the kernel, nothing else: descriptors, features, ranges, resolving ioctls, events,
memfds and views, hugetlb pools as sysfs shows them, HGM detection.
"""

from . import hugepages
from .errors import FeatureUnsupported, MappingChanged, PageExists, UffdError
from .events import Event, Fork, PageFault, Remap, Remove, Unmap
from .flags import Feature, Ioctl, RegisterMode
from .hgm import HgmDetection, detect as detect_hgm
from .memory import (PAGE_SIZE, SIZE_1G, SIZE_2M, Mapping, advise_huge, collapse, dontneed,
                     fallocate, madvise, memfd, populate)
from .userfaultfd import ApiResult, Userfaultfd, supported_features

__all__ = [
    "ApiResult", "Event", "Feature", "FeatureUnsupported", "Fork", "HgmDetection", "Ioctl",
    "Mapping", "MappingChanged", "PAGE_SIZE", "PageExists", "PageFault", "RegisterMode", "Remap",
    "Remove", "SIZE_1G", "SIZE_2M", "UffdError", "Unmap", "Userfaultfd", "advise_huge", "collapse",
    "detect_hgm",
    "dontneed", "fallocate", "hugepages", "madvise", "memfd", "populate", "supported_features",
]

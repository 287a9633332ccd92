"""cffi_uffd: the Linux userfaultfd interface for Python (cffi, API mode).

Knows the kernel, nothing else: descriptors, features, ranges, resolving ioctls, events,
memfds and views, hugetlb pools, HGM detection, and a C touch loop for synthetic vCPUs.
"""

from . import events, hugepages
from .errors import FeatureUnsupported, MappingChanged, PageExists, UffdError
from .events import Event, Fork, PageFault, Remap, Remove, Unmap
from .flags import Feature, Ioctl, RegisterMode
from .hgm import HgmDetection, detect as detect_hgm
from .memory import PAGE_SIZE, SIZE_1G, SIZE_2M, Mapping, fallocate, madvise, memfd, populate
from .touch import SigbusHit, monotonic_ns, touch, touch_catching_sigbus
from .userfaultfd import ApiResult, Userfaultfd, supported_features

__all__ = [
    "ApiResult", "Event", "Feature", "FeatureUnsupported", "Fork", "HgmDetection", "Ioctl",
    "Mapping", "MappingChanged", "PAGE_SIZE", "PageExists", "PageFault", "RegisterMode", "Remap",
    "Remove", "SIZE_1G", "SIZE_2M", "UffdError", "Unmap", "Userfaultfd", "detect_hgm", "events",
    "fallocate", "hugepages", "madvise", "memfd", "monotonic_ns", "populate", "supported_features", "touch",
    "touch_catching_sigbus", "SigbusHit",
]

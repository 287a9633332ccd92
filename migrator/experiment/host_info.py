"""The host block of results.json."""

from __future__ import annotations

import os
import platform

from cffi_uffd import HgmDetection, hugepages


def host_block(hgm: HgmDetection) -> dict:
    return {
        "kernel": platform.release(),
        "cores": os.cpu_count(),
        "hugepage_pools": {str(s): hugepages.pool(s).as_dict() for s in hugepages.sizes()},
        "hgm": bool(hgm.present),
        "hgm_detection": hgm.as_dict(),
    }

"""The host block of results.json."""

from __future__ import annotations

import os
import platform

from cffi_uffd import HgmDetection

from ..host import pools


def host_block(hgm: HgmDetection) -> dict:
    return {
        "kernel": platform.release(),
        "cores": os.cpu_count(),
        "hugepage_pools": pools.snapshot(),
        "hgm": bool(hgm.present),
        "hgm_detection": hgm.as_dict(),
    }

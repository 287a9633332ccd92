"""HGM detection as migrator runs it: cffi_uffd's MADV_SPLIT probe, borrowing one huge page
from the pool for the probe when none is free, and giving it back."""

from __future__ import annotations

from cffi_uffd import SIZE_2M, HgmDetection, detect_hgm

from . import pools


def detect(page_size: int = SIZE_2M) -> HgmDetection:
    try:
        if pools.available(page_size) > 0:
            return detect_hgm(page_size)
        with pools.reserved(page_size, 1) as got:
            if got < 1:
                return HgmDetection(None, "madvise(MADV_SPLIT)", "no free huge page to probe with")
            return detect_hgm(page_size)
    except (OSError, ValueError) as e:
        return HgmDetection(None, "madvise(MADV_SPLIT)", f"could not probe: {e}")

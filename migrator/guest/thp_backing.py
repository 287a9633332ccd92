"""The guest's RAM in the `thp` mode: a shmem memfd in 2 MiB folios, checked, not assumed."""

from __future__ import annotations

from cffi_uffd import Mapping, advise_huge, populate

from .. import smaps


def populate_huge(prealloc: Mapping, folio: int) -> dict:
    """Fault the whole memfd in through a MADV_HUGEPAGE view and count what became huge.

    A 2 MiB folio is mapped by PMD where the view is 2 MiB aligned, so this view's
    ShmemPmdMapped is the memfd's bytes in 2 MiB folios (exact for this file, unlike the
    host-wide ShmemHugePages, which every other shmem user moves too). A folio that could
    not be huge (no free 2 MiB block, or the knob off) stays 4 KiB pages: counted, and
    reported as `not_huge`.
    """
    advise_huge(prealloc.address, prealloc.length)
    populate(prealloc.address, prealloc.length)
    pmd = smaps.mapping(prealloc.address)["ShmemPmdMapped"]
    folios = -(-prealloc.length // folio)
    huge = pmd // folio
    return {"folio_bytes": folio, "folios": folios, "huge": huge, "not_huge": folios - huge,
            "view_aligned": prealloc.address % folio == 0}


def advise_huge_view(view: Mapping, folio: int) -> None:
    """The guest's own view asks for huge pages too: MADV_COLLAPSE wants a VMA THP may use,
    and a PMD can only map it where it is aligned to the folio."""
    if view.address % folio:
        raise ValueError(f"the guest view at 0x{view.address:x} is not {folio >> 20} MiB "
                         "aligned: no PMD could map it")
    advise_huge(view.address, view.length)

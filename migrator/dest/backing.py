"""Which memory backs the guest and at what granularity faults are resolved, by mode.

| mode     | backing                                | granularity    |
| hgm      | hugetlb with real HGM (MADV_SPLIT)     | 4 KiB          |
| hgm      | shmem, same layout, when no HGM        | 4 KiB          |  "hgm (emulated on shmem)"
| hugepage | hugetlb of the given huge page size    | the huge page  |
| thp      | shmem in 2 MiB THP folios (MADV_HUGEPAGE) | 4 KiB, each 2 MiB collapsed once complete |

`thp` collapses to 2 MiB whatever the huge page size asked for (THP has no 1 GiB shmem folios):
its label says so.

Never a silent fallback: the label says which one runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cffi_uffd import PAGE_SIZE, SIZE_2M, HgmDetection

from ..units import hugepage_label

MODES = ("hgm", "hugepage", "thp")
THP_FOLIO = SIZE_2M


@dataclass(frozen=True)
class Backing:
    mode: str
    backing: str  # "hugetlb-1G", "hugetlb-2M", "hugetlb-1G-hgm", "shmem-emulated-hgm", "shmem-thp-2M"
    label: str  # for people: "hgm (emulated on shmem)", "hugepage on hugetlb-1G"
    memory_page_size: int  # the memfd's page size
    granularity: int  # bytes fetched and installed per fault
    hugepage_size: int  # the huge page size asked for (the layout is aligned to it)
    collapse_size: int = 0  # thp: each range of this size is collapsed once complete; 0: none

    @property
    def metric_labels(self) -> tuple[str, str]:
        """(mode, backing): the labels every destination metric starts with."""
        return self.mode, self.backing

    @property
    def thp(self) -> bool:
        return self.collapse_size > 0

    def as_dict(self) -> dict:
        return asdict(self)


def choose(mode: str, hugepage_size: int, hgm: HgmDetection) -> Backing:
    if mode == "hugepage":
        name = f"hugetlb-{hugepage_label(hugepage_size)}"
        return Backing(mode, name, f"hugepage on {name}", hugepage_size, hugepage_size, hugepage_size)
    if mode == "hgm":
        if hgm.present:
            name = f"hugetlb-{hugepage_label(hugepage_size)}-hgm"
            return Backing(mode, name, f"hgm on {name}", hugepage_size, PAGE_SIZE, hugepage_size)
        return Backing(mode, "shmem-emulated-hgm", "hgm (emulated on shmem)", PAGE_SIZE, PAGE_SIZE,
                       hugepage_size)
    if mode == "thp":
        return Backing(mode, "shmem-thp-2M", "thp (shmem 2 MiB folios)", PAGE_SIZE, PAGE_SIZE,
                       hugepage_size, THP_FOLIO)
    raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")

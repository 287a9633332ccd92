"""Which memory backs the guest, and at what granularity faults are resolved, by mode: never a
silent fallback, the label always says which one runs."""

import pytest

from cffi_uffd import PAGE_SIZE, SIZE_1G, SIZE_2M, HgmDetection
from migrator.dest.backing import MODES, choose

NO_HGM = HgmDetection(False, "madvise(MADV_SPLIT)", "EINVAL: this kernel has no HGM")
HGM = HgmDetection(True, "madvise(MADV_SPLIT)", "MADV_SPLIT accepted")


@pytest.mark.parametrize("size, name", [(SIZE_1G, "hugetlb-1G"), (SIZE_2M, "hugetlb-2M")])
def test_hugepage_mode_fetches_and_installs_whole_huge_pages(size, name):
    b = choose("hugepage", size, NO_HGM)
    assert (b.backing, b.memory_page_size, b.granularity) == (name, size, size)
    assert b.label == f"hugepage on {name}"


def test_hgm_without_hgm_runs_emulated_on_shmem_and_says_so():
    b = choose("hgm", SIZE_1G, NO_HGM)
    assert (b.backing, b.label) == ("shmem-emulated-hgm", "hgm (emulated on shmem)")
    assert (b.memory_page_size, b.granularity, b.hugepage_size) == (PAGE_SIZE, PAGE_SIZE, SIZE_1G)


def test_hgm_with_hgm_maps_hugetlb_4_kib_at_a_time():
    b = choose("hgm", SIZE_2M, HGM)
    assert (b.backing, b.memory_page_size, b.granularity) == ("hugetlb-2M-hgm", SIZE_2M, PAGE_SIZE)


def test_an_hgm_probe_that_could_not_run_is_not_taken_for_hgm():
    unknown = HgmDetection(None, "madvise(MADV_SPLIT)", "no free huge page to probe with")
    assert choose("hgm", SIZE_2M, unknown).backing == "shmem-emulated-hgm"


@pytest.mark.parametrize("size", [SIZE_1G, SIZE_2M])
def test_thp_faults_4_kib_in_shmem_and_collapses_to_2_mib_whatever_the_huge_page_size(size):
    b = choose("thp", size, NO_HGM)
    assert (b.backing, b.label) == ("shmem-thp-2M", "thp (shmem 2 MiB folios)")
    assert (b.memory_page_size, b.granularity, b.hugepage_size) == (PAGE_SIZE, PAGE_SIZE, size)
    assert b.collapse_size == SIZE_2M and b.thp
    assert not choose("hgm", size, NO_HGM).thp


def test_an_unknown_mode_names_the_known_ones():
    with pytest.raises(ValueError, match=", ".join(MODES)):
        choose("thb", SIZE_2M, NO_HGM)

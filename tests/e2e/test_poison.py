"""Memory errors: a page poisoned on the source, or on the destination during the run, takes
away its granule from the guest: 4 KiB in hgm mode, the whole huge page in hugepage mode."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from array import array

import pytest

from cffi_uffd import SIZE_2M
from migrator.guest.touch import touch
from helpers.daemons import start_source, stop_daemon
from migrator.client.http import fetch_manifest
from migrator.guest.session import DestinationSession
from migrator.guest.memory import GuestMemory
from migrator.protocol.digest import page_digest
from migrator.protocol.manifest import POISON

from migrator import smaps

from helpers.thp import shmem_thp  # noqa: F401  (fixture)

from .conftest import TOKEN, Dest

POISONED = (100, 700)  # 4 KiB pages; in different 2 MiB huge pages (0 and 1)


@pytest.fixture(scope="module")
def poisoned_source():
    proc, url = start_source("16MiB", seed=9, token=TOKEN,
                             extra_args=["--poison-pages", ",".join(map(str, POISONED))])
    yield url
    stop_daemon(proc)


class Guest:
    """An in-test guest: its memory handed over, its vCPU touches done by hand."""

    def __init__(self, dest: Dest):
        self.link = DestinationSession(dest.socket, 1)
        layout = self.link.layout
        self.memory = GuestMemory(layout["size"], layout["memory_page_size"],
                                  layout.get("thp_folio", 0))
        self.link.hand_over(self.memory)
        self.base = self.memory.view.address

    def touch(self, pages: list[int]) -> dict[int, int]:
        """page -> offset of the SIGBUS the touch got (only the pages that got one)."""
        addresses = array("Q", [self.base + p * 4096 + 8 for p in pages])
        hits = touch(addresses, catch_sigbus=True).sigbus
        return {pages[h.index]: h.address - self.base for h in hits}

    def page_digest(self, page: int) -> int:
        return page_digest(self.memory.view.view[page * 4096:(page + 1) * 4096])

    def close(self) -> None:
        self.link.close()
        self.memory.close()


@pytest.mark.parametrize("mode,blast", [("hgm", 4096), ("hugepage", SIZE_2M)])
def test_source_poison_takes_away_one_granule(poisoned_source, pool_2m, mode, blast):
    manifest = fetch_manifest(poisoned_source, TOKEN)
    assert [p for p, k in enumerate(manifest.kinds) if k == POISON] == list(POISONED)
    dest = Dest(poisoned_source, mode, SIZE_2M, "--background-delay", "0.5")
    guest = Guest(dest)
    try:
        neighbours = [99, 101, 511, 512, 1100]
        hits = guest.touch([100, *neighbours, 700])
        # The guest sees SIGBUS exactly where it touched poisoned memory.
        assert hits[100] == 100 * 4096 + 8 and hits[700] == 700 * 4096 + 8
        if mode == "hgm":  # only the 4 KiB pages: the neighbours read the source's bytes
            assert set(hits) == {100, 700}
            for p in neighbours:
                assert guest.page_digest(p) == manifest.digests[p]
        else:  # the whole 2 MiB huge pages around them are gone
            assert set(hits) == {100, 99, 101, 511, 512, 700}
            assert guest.page_digest(1100) == manifest.digests[1100]  # huge page 2: intact
        complete = guest.link.wait_complete(60)
        assert complete["phase"] == "complete", complete.get("error")
        poison = complete["poison"]
        assert poison["source_pages"] == 2 and poison["granules"] == 2
        assert poison["bytes_inaccessible"] == 2 * blast
        # Poisoned pages are not verified (never fetched) but counted.
        unverified = 2 * blast // 4096
        assert complete["verified_pages"] == manifest.pages - unverified
        assert complete["mismatched_pages"] == 0
    finally:
        guest.close()
        dest.stop()


@pytest.mark.parametrize("mode,blast", [("hgm", 4096), ("hugepage", SIZE_2M)])
def test_error_injected_after_the_page_arrived(source, pool_2m, dest_factory, mode, blast):
    manifest = fetch_manifest(source, TOKEN)
    dest = dest_factory(mode, SIZE_2M)
    guest = Guest(dest)
    try:
        assert guest.touch([2048, 2049, 2600]) == {}  # installed, readable
        complete = guest.link.wait_complete(60)
        assert complete["phase"] == "complete"
        req = urllib.request.Request(
            f"{dest.url}/v1/migrations/{guest.link.session}/poison", method="POST",
            data=json.dumps({"page": 2048}).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        result = json.load(urllib.request.urlopen(req, timeout=10))
        assert result["was"] == "installed" and result["bytes_inaccessible"] == blast
        hits = guest.touch([2048, 2049, 2600])
        assert 2048 in hits
        if mode == "hgm":
            assert set(hits) == {2048}
            assert guest.page_digest(2049) == manifest.digests[2049]
        else:  # pages 2048..2559 share one 2 MiB page; 2600 is in the next
            assert set(hits) == {2048, 2049}
        assert guest.page_digest(2600) == manifest.digests[2600]
        status = dest.migration(guest.link.session)
        assert status["poison"]["injected_pages"] == 1
        assert status["poison"]["bytes_inaccessible"] == blast
    finally:
        guest.close()


def test_poison_endpoint_rejects_bad_requests(source, dest_factory):
    dest = dest_factory("hgm", SIZE_2M, "--background-delay", "30")
    guest = Guest(dest)
    try:
        url = f"{dest.url}/v1/migrations/{{}}/poison"
        cases = ((guest.link.session, b"not json", 400, "JSON"),
                 (guest.link.session, b'{"page": "x"}', 400, "page"),
                 (guest.link.session, b'{"page": -1}', 400, "outside"),
                 ("nosuch", b'{"page": 1}', 404, "no migration"))
        for session, body, code, words in cases:
            req = urllib.request.Request(url.format(session), method="POST", data=body,
                                         headers={"Authorization": f"Bearer {TOKEN}"})
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=10)
            assert e.value.code == code and words in e.value.read().decode()
        assert dest.alive() and guest.touch([5]) == {}
    finally:
        guest.close()


# -- thp: what this kernel does with an error in a 2 MiB shmem folio ----------------------------

def _pmd_mapped(guest: Guest) -> int:
    return smaps.mapping(guest.base)["ShmemPmdMapped"]


def _in_huge_folio(guest: Guest, page: int) -> bool:
    """Whether the page cache page behind a guest page is part of a THP (kpageflags, root)."""
    with open("/proc/self/pagemap", "rb") as f:
        f.seek((guest.base // 4096 + page) * 8)
        entry = int.from_bytes(f.read(8), "little")
    assert entry >> 63, f"page {page} is not mapped"
    with open("/proc/kpageflags", "rb") as f:
        f.seek((entry & ((1 << 55) - 1)) * 8)
        flags = int.from_bytes(f.read(8), "little")
    return bool(flags >> _KPF_THP & 1)


_KPF_THP = 22


def test_thp_source_poison_costs_4k_and_leaves_its_range_uncollapsed(poisoned_source,
                                                                     shmem_thp):  # noqa: F811
    manifest = fetch_manifest(poisoned_source, TOKEN)
    dest = Dest(poisoned_source, "thp", SIZE_2M, "--background-delay", "0.5")
    guest = Guest(dest)
    try:
        neighbours = [99, 101, 511, 512, 1100]
        hits = guest.touch([100, *neighbours, 700])
        assert set(hits) == {100, 700}  # only the 4 KiB pages
        for p in neighbours:
            assert guest.page_digest(p) == manifest.digests[p]
        complete = guest.link.wait_complete(60)
        assert complete["phase"] == "complete", complete.get("error")
        assert complete["poison"]["bytes_inaccessible"] == 2 * 4096
        c = complete["collapse"]
        # the two ranges holding an error stay at 4 KiB (a poison marker is no present PTE);
        # the folio behind them is still huge in the page cache
        assert (c["skipped_poisoned"], c["collapsed"], c["failed"]) == (2, c["folios"] - 2, 0)
        assert c["huge_mapped"]["pmd_mapped_bytes"] == 16 * 2**20 - 2 * SIZE_2M
        assert _pmd_mapped(guest) == 16 * 2**20 - 2 * SIZE_2M
        assert _in_huge_folio(guest, 101)
    finally:
        guest.close()
        dest.stop()


def test_thp_error_after_collapse_splits_the_folio_and_costs_4k(source, dest_factory,
                                                               shmem_thp):  # noqa: F811
    manifest = fetch_manifest(source, TOKEN)
    dest = dest_factory("thp", SIZE_2M)
    guest = Guest(dest)
    try:
        complete = guest.link.wait_complete(60)
        assert complete["phase"] == "complete"
        size = complete["pages_total"] * 4096
        assert _pmd_mapped(guest) == size and _in_huge_folio(guest, 2049)
        req = urllib.request.Request(
            f"{dest.url}/v1/migrations/{guest.link.session}/poison", method="POST",
            data=json.dumps({"page": 2048}).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        result = json.load(urllib.request.urlopen(req, timeout=10))
        assert result["bytes_inaccessible"] == 4096
        # the other 511 pages of the range were unmapped by the split, and mapped again at 4 KiB
        assert result["remapped_4k_bytes"] == SIZE_2M - 4096
        hits = guest.touch([2048, 2049, 2559, 2600])
        assert set(hits) == {2048}
        for p in (2049, 2559, 2600):
            assert guest.page_digest(p) == manifest.digests[p]
        # this kernel split the folio: 4 KiB pages now, and that 2 MiB lost its PMD
        assert not _in_huge_folio(guest, 2049)
        assert _pmd_mapped(guest) == size - SIZE_2M
        assert _in_huge_folio(guest, 2600)
    finally:
        guest.close()

"""Wrong pages from the source (`source --inject-corruption`): the destination refetches what
does not match the manifest and completes verified, or fails naming a page that stays wrong;
a wrong page is never mapped into the guest."""

from __future__ import annotations

import struct

import pytest

from cffi_uffd import SIZE_2M
from helpers.daemons import start_source, stop_daemon
from migrator.client.http import fetch_manifest
from migrator.guest.memory import GuestMemory
from migrator.guest.session import DestinationSession
from migrator.protocol.manifest import DATA
from migrator.source.inject import KINDS

from .conftest import TOKEN, Dest, run_guest

IMAGE = "32MiB"


@pytest.fixture(scope="module")
def corrupting_source():
    proc, url = start_source(IMAGE, seed=11, token=TOKEN,
                             extra_args=["--inject-corruption", "0.02"])
    yield url
    stop_daemon(proc)


def _source_status(url: str) -> dict:
    import json
    import urllib.request

    req = urllib.request.Request(f"{url}/v1/status", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


@pytest.mark.parametrize("mode", ["hgm", "hugepage"])
def test_pages_served_wrong_once_are_refetched_and_the_migration_completes_verified(
        corrupting_source, pool_2m, mode):
    dest = Dest(corrupting_source, mode, SIZE_2M)
    try:
        report = run_guest(dest, "--vcpus", "2", "--accesses", "300")
        m = report["migration"]
        assert m["phase"] == "complete", dest.tail()
        assert m["mismatched_pages"] == 0
        assert m["refetched_pages"] > 0  # the digest check fired and the refetch path ran
        assert m["verified_pages"] == m["pages_total"]
        assert report["verify"]["mismatched_pages"] == 0 and report["verify"]["writes_lost"] == 0
        session = _source_status(corrupting_source)["sessions"][report["session"]]
        injected = {k: session["urgent"].get("injected_wrong_pages", {}).get(k, 0)
                    + session["background"].get("injected_wrong_pages", {}).get(k, 0)
                    for k in KINDS}
        assert all(n > 0 for n in injected.values()), injected  # every kind, one in 16 short
        assert m["recoveries"], injected  # a reply cut short broke its stream: it reconnected
    finally:
        dest.stop()


def _mapped(address: int) -> bool:
    """Whether this process maps a page at address (/proc/self/pagemap's present bit)."""
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(address // 4096 * 8)
        (entry,) = struct.unpack("<Q", f.read(8))
    return bool(entry >> 63 & 1)


@pytest.mark.parametrize("mode", ["hgm", "hugepage"])
def test_a_page_always_wrong_fails_the_migration_naming_it_and_is_never_mapped(pool_2m, mode):
    probe_proc, probe_url = start_source(IMAGE, seed=12, token=TOKEN)
    kinds = fetch_manifest(probe_url, TOKEN).kinds
    stop_daemon(probe_proc)
    page = next(p for p in range(len(kinds) // 2, len(kinds)) if kinds[p] == DATA)
    proc, url = start_source(IMAGE, seed=12, token=TOKEN,
                             extra_args=["--inject-corruption-pages", str(page)])
    dest = Dest(url, mode, SIZE_2M)
    link = DestinationSession(dest.socket, 1)
    memory = GuestMemory(link.layout["size"], link.layout["memory_page_size"])
    try:
        link.hand_over(memory)  # no vCPU touches anything: the background pull fetches it all
        m = dest.wait_phase(link.session, ("failed", "complete"))
        assert m["phase"] == "failed"
        assert f"page {page}" in m["error"] and "differ from the manifest" in m["error"]
        assert m["mismatched_pages"] >= 1
        base = memory.view.address
        assert not _mapped(base + page * 4096)  # the wrong page never reached the guest
        # nor any page of its granule (in the hugepage mode, its whole huge page)
        granule = link.layout["granularity"]
        first = page * 4096 // granule * granule
        assert not any(_mapped(base + a) for a in range(first, first + granule, 4096))
        installed = [p for p in range(0, len(kinds), 64) if _mapped(base + p * 4096)]
        assert installed, "the premise: pages that were right were installed"
    finally:
        link.close()
        memory.close()
        dest.stop()
        stop_daemon(proc)

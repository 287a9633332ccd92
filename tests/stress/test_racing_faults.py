"""Racing faults, in the spirit of the kernel's uffd-stress: many vCPUs fault on random pages of
migrating memory, all at once on the same pages to begin with, while the background pull races
them and half the accesses are writes. At the end every page is verified: none lost, none
mismatched, every write kept, every page installed exactly once."""

from __future__ import annotations

import random
import struct
import threading
import time
from array import array

import pytest

from cffi_uffd import SIZE_2M
from migrator.guest.memory import GuestMemory
from migrator.guest.session import DestinationSession
from migrator.guest.touch import touch
from migrator.protocol import PAGE_SIZE
from migrator.protocol.digest import page_digest

from e2e.conftest import Dest, run_guest

from .conftest import ACCESSES, ROUNDS, SEED, VCPUS, WRITE_RATIO

MODES = ["hgm", "hugepage"]
HOT_PAGES = 64  # every vCPU starts on these, in the same order: simultaneous faults on a page
VCPU_TIMEOUT_S = 120.0


@pytest.fixture(params=MODES)
def dest(request, source, pool_2m):
    # The pull at full speed beside the faults (by default it stands back while they are
    # served): the races with it are what this file is about.
    d = Dest(source.url, request.param, SIZE_2M, "--no-background-preempt")
    yield d
    d.stop()


def _assert_installed_once_and_verified(m: dict, pages: int) -> None:
    assert m["phase"] == "complete", m.get("error")
    assert m["verified_pages"] == pages and m["mismatched_pages"] == 0
    assert m["pages_urgent"] + m["pages_background"] == pages, "a page installed twice or lost"
    assert m["eexist"] == 0, "two resolvers installed the same granule"
    assert m["refetched_pages"] == 0


class RacingGuest:
    """One guest: VCPUS threads run the C touch loop from the same barrier at switchover."""

    def __init__(self, dest: Dest, seed: int):
        self.link = DestinationSession(dest.socket, VCPUS)
        layout = self.link.layout
        self.memory = GuestMemory(layout["size"], layout["memory_page_size"])
        self.pages = layout["size"] // PAGE_SIZE
        base = self.memory.view.address
        rng = random.Random(seed)
        hot = rng.sample(range(self.pages), HOT_PAGES)
        self.runs = []
        self.expected: dict[int, int] = {}  # address -> the last value a vCPU wrote there
        for v in range(VCPUS):
            r = random.Random(f"{seed}:{v}")
            pages = hot + [r.randrange(self.pages) for _ in range(ACCESSES - HOT_PAGES)]
            writes = bytes(r.random() < WRITE_RATIO for _ in pages)
            # A write goes to the vCPU's own 8-byte slot of the page, so the last value written
            # to each slot is known; a read goes anywhere in the page.
            addresses = array("Q", (base + p * PAGE_SIZE + (8 * v if w else 8 * r.randrange(512))
                                    for p, w in zip(pages, writes)))
            values = array("Q", (((v + 1) << 48) | (i + 1) for i in range(len(pages))))
            for a, w, value in zip(addresses, writes, values):
                if w:
                    self.expected[a] = value
            self.runs.append((addresses, writes, values))

    def run(self) -> dict:
        """Switch over, run the vCPUs, wait for the migration; its report."""
        go = threading.Barrier(VCPUS + 1)
        errors: list[BaseException] = []

        def vcpu(addresses, writes, values) -> None:
            try:
                go.wait()
                touch(addresses, writes, values)
            except BaseException as e:  # noqa: BLE001 (reported below)
                errors.append(e)

        threads = [threading.Thread(target=vcpu, args=run, name=f"vcpu{i}")
                   for i, run in enumerate(self.runs)]
        for t in threads:
            t.start()
        try:
            self.link.hand_over(self.memory)  # memory is migrating from here on
        finally:
            go.wait()  # the vCPUs run now (or, if the hand-over failed, touch resident memory)
            for t in threads:
                t.join(VCPU_TIMEOUT_S)
        assert not any(t.is_alive() for t in threads), "a vCPU is stuck on a fault"
        assert not errors, errors
        return {k: v for k, v in self.link.wait_complete(60).items() if k != "type"}

    def verify(self, source) -> None:
        """Every page the vCPUs did not write matches the source; every write is there."""
        view, base = self.memory.view.view, self.memory.view.address
        written = {(a - base) // PAGE_SIZE for a in self.expected}
        bad = [p for p in range(self.pages) if p not in written
               and page_digest(view[p * PAGE_SIZE:(p + 1) * PAGE_SIZE]) != source.digests[p]]
        assert not bad, f"{len(bad)} pages differ from the source, first {bad[:10]}"
        lost = [a for a, value in self.expected.items()
                if struct.unpack_from("<Q", view, a - base)[0] != value]
        assert not lost, f"{len(lost)} of {len(self.expected)} writes lost"

    def close(self) -> None:
        self.link.close()
        self.memory.close()


def test_racing_vcpus_writes_and_background_pull_lose_nothing(dest, source):
    races = {"faults": 0, "waited_on_background": 0, "joined": 0}
    for round_ in range(ROUNDS):
        began = time.monotonic()
        guest = RacingGuest(dest, SEED + round_)
        try:
            m = guest.run()
            _assert_installed_once_and_verified(m, source.pages)
            guest.verify(source)
        finally:
            guest.close()
        races["faults"] += m["faults"]
        races["waited_on_background"] += m["faults_waited_on_background"]
        # faults beyond the granules fetched for them: vCPUs that faulted on a granule whose
        # fetch another vCPU's fault had started (or the pull was installing)
        granules_fetched = m["pages_urgent"] * PAGE_SIZE // m["granularity_bytes"]
        races["joined"] += m["faults"] - granules_fetched
        print(f"{m['mode']} round {round_}: {m['faults']} faults from {m['fault_threads']} "
              f"threads, {m['faults_waited_on_background']} waited on the background pull, "
              f"{m['pages_urgent']} urgent + {m['pages_background']} background pages, "
              f"{len(guest.expected)} writes kept, {time.monotonic() - began:.2f} s")
    assert races["faults"] >= ROUNDS  # the vCPUs did fault: memory was migrating under them
    assert races["joined"] > 0, races  # the premise: vCPUs raced each other on a granule
    assert races["waited_on_background"] > 0, races  # and the background pull
    assert dest.alive()


def test_guest_cli_16_vcpus_uniform_half_writes(dest, source):
    for round_ in range(ROUNDS):
        report = run_guest(dest, "--vcpus", str(VCPUS), "--pattern", "uniform",
                           "--write-ratio", str(WRITE_RATIO), "--accesses", str(ACCESSES),
                           "--seed", str(SEED + round_))
        m = report["migration"]
        _assert_installed_once_and_verified(m, source.pages)
        assert report["verify"]["mismatched_pages"] == 0
        assert report["verify"]["writes_lost"] == 0 and report["verify"]["writes_checked"] > 0
        assert m["fault_threads"] > 1

"""The C touch loop: one latency and one start time per access, and the GIL released while it
waits on faults (resolved here by a Python thread on a real userfaultfd)."""

import time
from array import array

import pytest

from cffi_uffd import PAGE_SIZE, Feature, Mapping, PageFault, RegisterMode
from migrator.guest.touch import touch

monotonic_ns = time.monotonic_ns  # CLOCK_MONOTONIC, the clock the touch loop reads

PAGES = 4
DELAY_NS = 5_000_000


def test_one_latency_per_access_and_stores_land():
    with Mapping.anonymous(PAGES * PAGE_SIZE) as m:
        addresses = array("Q", [m.address + i * 8 for i in range(100)])
        values = array("Q", range(1000, 1100))
        latency = touch(addresses, bytes([1]) * 100, values).latency_ns
        assert latency.typecode == "Q" and len(latency) == len(addresses)
        assert array("Q", m.view[:800].cast("Q")) == values
        assert touch(addresses).checksum == sum(values)


def test_touch_rejects_mismatched_arguments():
    with pytest.raises(TypeError):
        touch(array("L", [0]))
    with pytest.raises(ValueError):
        touch(array("Q", [0, 8]), b"\x00")


def test_python_resolves_faults_while_the_loop_runs(new_uffd, resolver, toucher):
    # The resolver burns Python bytecode (needs the GIL) before each COPY. If the touch loop
    # held the GIL while blocked in the fault, nothing would ever resolve and this would hang.
    uffd = new_uffd()
    uffd.api()
    with Mapping.anonymous(PAGES * PAGE_SIZE) as m, Mapping.anonymous(PAGE_SIZE) as src:
        uffd.register(m.address, m.length, RegisterMode.MISSING)
        spins = []

        def slow_copy(fault: PageFault) -> None:
            deadline, n = monotonic_ns() + DELAY_NS, 0
            while monotonic_ns() < deadline:
                n += 1
            spins.append(n)
            uffd.copy(fault.address, src.address, PAGE_SIZE)

        # Each page is touched twice: the first access faults, the second does not.
        addresses = [m.address + i * PAGE_SIZE + w for i in range(PAGES) for w in (0, 8)]
        started = time.monotonic()
        with resolver(uffd, slow_copy) as r:
            t = toucher(addresses).start_and_finish()
        assert len(r.faults()) == PAGES and all(n > 0 for n in spins)
        assert len(t.latency) == len(addresses)
        assert all(t.latency[i] >= DELAY_NS for i in range(0, len(addresses), 2))
        assert time.monotonic() - started >= PAGES * DELAY_NS / 1e9


def test_each_access_records_when_it_started_on_the_monotonic_clock():
    with Mapping.anonymous(PAGE_SIZE) as m:
        addresses = array("Q", [m.address + 8 * i for i in range(50)])
        before = monotonic_ns()
        t = touch(addresses)
        after = monotonic_ns()
    assert t.start_ns.typecode == "Q" and len(t.start_ns) == len(addresses)
    assert before <= t.start_ns[0] and t.start_ns[-1] + t.latency_ns[-1] <= after
    assert all(a <= b for a, b in zip(t.start_ns, t.start_ns[1:]))  # in order, never back


def test_a_fault_shows_as_the_latency_of_the_access_that_started_it(new_uffd, resolver):
    uffd = new_uffd()
    uffd.api()
    with Mapping.anonymous(2 * PAGE_SIZE) as m, Mapping.anonymous(PAGE_SIZE) as src:
        uffd.register(m.address, PAGE_SIZE, RegisterMode.MISSING)  # the first page only

        def slow_copy(fault: PageFault) -> None:
            time.sleep(DELAY_NS / 1e9)
            uffd.copy(fault.address & ~(PAGE_SIZE - 1), src.address, PAGE_SIZE)

        addresses = array("Q", [m.address + PAGE_SIZE, m.address, m.address + 8])
        with resolver(uffd, slow_copy):
            t = touch(addresses)
    assert t.latency_ns[1] >= DELAY_NS > max(t.latency_ns[0], t.latency_ns[2])
    assert t.start_ns[2] >= t.start_ns[1] + t.latency_ns[1]


def test_with_catch_sigbus_a_poisoned_page_is_recorded_and_the_loop_goes_on(new_uffd):
    uffd = new_uffd()
    uffd.api(Feature.POISON)
    with Mapping.anonymous(3 * PAGE_SIZE) as m:
        uffd.register(m.address, m.length, RegisterMode.MISSING)
        uffd.poison(m.address + PAGE_SIZE, PAGE_SIZE)
        uffd.zeropage(m.address, PAGE_SIZE)
        uffd.zeropage(m.address + 2 * PAGE_SIZE, PAGE_SIZE)
        addresses = array("Q", [m.address, m.address + PAGE_SIZE + 16, m.address + 2 * PAGE_SIZE])
        t = touch(addresses, catch_sigbus=True)
    assert t.sigbus_total == 1 and len(t.sigbus) == 1
    hit = t.sigbus[0]
    assert hit.index == 1 and hit.address == m.address + PAGE_SIZE + 16
    assert t.checksum == 0  # the two readable pages were read (zeros)


def test_sigbus_hits_beyond_max_hits_are_counted_not_kept(new_uffd):
    uffd = new_uffd()
    uffd.api(Feature.POISON)
    with Mapping.anonymous(4 * PAGE_SIZE) as m:
        uffd.register(m.address, m.length, RegisterMode.MISSING)
        uffd.poison(m.address, m.length)
        t = touch(array("Q", [m.address + i * PAGE_SIZE for i in range(4)]), catch_sigbus=True,
                  max_hits=2)
    assert t.sigbus_total == 4 and [h.index for h in t.sigbus] == [0, 1]

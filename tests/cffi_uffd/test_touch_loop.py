"""The C touch loop: one latency per access, and the GIL released while it waits on faults."""

import time
from array import array

import pytest

from cffi_uffd import PAGE_SIZE, Mapping, PageFault, RegisterMode, monotonic_ns, touch

PAGES = 4
DELAY_NS = 5_000_000


def test_one_latency_per_access_and_stores_land():
    with Mapping.anonymous(PAGES * PAGE_SIZE) as m:
        addresses = array("Q", [m.address + i * 8 for i in range(100)])
        values = array("Q", range(1000, 1100))
        latency, _ = touch(addresses, bytes([1]) * 100, values)
        assert latency.typecode == "Q" and len(latency) == len(addresses)
        assert array("Q", m.view[:800].cast("Q")) == values
        _, checksum = touch(addresses)
        assert checksum == sum(values)


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

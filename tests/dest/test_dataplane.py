"""The destination's C loops, in-process, on a real userfaultfd and a real shmem memfd.

Each test runs the fault loop and/or the background loop (migrator/_cffi_src/dest_*.c) against
the real C sender or a scripted source, with vCPU threads running the guest's C touch loop.
"""

from __future__ import annotations

import os
import socket
import time
from array import array

import pytest

from migrator.dest.backing import Backing
from migrator.dest.telemetry import Telemetry
from migrator.guest.touch import touch
from migrator.dest.dataplane import (
    ABSENT, BACKGROUND, DONE, FAILED, LINK, PRESENT, URGENT, BackgroundPolicy,
)
from migrator.protocol import PAGE_SIZE

from dest.dataplane_rig import Rig

PAGES = 256  # 1 MiB of guest memory: 192 data pages, 64 zero pages


@pytest.fixture
def rig():
    made: list[Rig] = []

    def make(pages: int = PAGES, **policy) -> Rig:
        r = Rig(pages, BackgroundPolicy(**policy))
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def _wait(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _data_page(r: Rig, at_least: int = 0) -> int:
    return next(p for p in range(at_least, r.pages) if r.manifest.kinds[p] == 0)


def test_a_fault_fetches_verifies_and_installs_exactly_its_page(rig):
    r = rig()
    r.loop_against_real_source("faults")
    page = _data_page(r, 10)
    r.touch_pages([page]).join(timeout=10)
    # CONTINUE wakes the vCPU before the fault loop has counted the install
    _wait(lambda: r.plane.state(page) == PRESENT, what="the install counted")
    urgent = r.plane.counters("urgent")
    assert r.guest_page(page) == r.image_page(page)
    assert (urgent.requests, urgent.bytes, urgent.pages, urgent.verified_pages) == (1, PAGE_SIZE, 1, 1)
    assert r.plane.state(page) == PRESENT and r.plane.present == 1
    granule, read, done, tid = r.plane.faults()[0]
    assert granule == page and done > read


def test_a_fault_on_a_zero_page_sends_no_request(rig):
    r = rig()
    source, _ = r.loop_against("faults")
    zero = next(p for p in range(r.pages) if r.manifest.kinds[p] == 1)
    r.touch_pages([zero]).join(timeout=10)
    _wait(lambda: r.plane.state(zero) == PRESENT, what="the install counted")
    assert r.guest_page(zero) == bytes(PAGE_SIZE)
    assert source.requests == [] and r.plane.counters("urgent").verified_pages == 1


def test_sixteen_vcpus_on_one_page_make_one_request_and_all_resume(rig):
    r = rig()
    source, _ = r.loop_against("faults", hold=_data_page(r, 3))
    page = _data_page(r, 3)
    vcpus = [r.touch_pages([page]) for _ in range(16)]
    assert source.held.wait(10)
    time.sleep(0.05)  # let every vCPU fault while the one reply is held
    source.release.set()
    for v in vcpus:
        v.join(timeout=10)
        assert not v.is_alive()
    assert source.requests == [(page * PAGE_SIZE, PAGE_SIZE)]
    assert r.plane.counters("urgent").faults >= 2  # the others queued behind the first
    # a vCPU woken by the install may resume before its own fault event is read: then the
    # fault loop finds the page present and resolves the event at once
    _wait(lambda: all(done for _, _, done, _ in r.plane.faults()), what="every fault resolved")
    assert r.guest_page(page) == r.image_page(page)


def test_the_background_loop_fills_every_page_and_completes(rig):
    r = rig(chunk_bytes=64 << 10, window=3)
    r.loop_against_real_source("background").join(timeout=30)
    assert r.results["background"] == DONE and r.plane.complete, r.plane.error
    bg = r.plane.counters("background")
    assert bg.verified_pages == PAGES and bg.pages == PAGES
    assert bg.bytes == PAGE_SIZE * r.manifest.kinds.count(0)  # zero pages never travel
    assert bytes(r.guest.view) == r.image


def test_a_fault_on_a_granule_the_background_is_installing_waits_for_that_install(rig):
    r = rig(chunk_bytes=PAGES * PAGE_SIZE, window=1)  # one job: the whole image
    page = _data_page(r, 100)
    r.loop_against("faults")
    held, _ = r.loop_against("background", hold=page)
    assert held.held.wait(10)
    assert r.plane.state(page) == BACKGROUND
    vcpu = r.touch_pages([page])
    _wait(lambda: r.plane.counters("urgent").faults == 1, what="the fault")
    assert vcpu.is_alive()  # blocked until the background install
    held.release.set()
    vcpu.join(timeout=10)
    assert not vcpu.is_alive()
    assert r.plane.counters("urgent").faults_waited == 1  # the race happened, and was waited out
    assert r.plane.counters("urgent").requests == 0  # and fetched once, by the background
    assert r.guest_page(page) == r.image_page(page)
    _wait(lambda: r.plane.complete, what="completion")


def test_the_background_maps_every_zero_page_before_it_requests_any_data(rig):
    r = rig(chunk_bytes=16 * PAGE_SIZE, window=1)
    held, _ = r.loop_against("background", hold=_data_page(r))
    assert held.held.wait(10)  # the first data request is in, and held
    zero = [p for p in range(r.pages) if r.manifest.kinds[p] == 1]
    assert zero and all(r.plane.state(p) == PRESENT for p in zero)
    assert not any(r.plane.state(p) == PRESENT for p in range(r.pages) if p not in zero)
    vcpu = r.touch_pages(zero)  # no fault loop runs: a zero page not mapped would block it
    vcpu.join(timeout=10)
    assert not vcpu.is_alive()
    held.release.set()
    _wait(lambda: r.plane.complete, what="completion")
    assert bytes(r.guest.view) == r.image


def test_the_background_requests_no_data_before_the_first_fault_is_read(rig):
    # a VM's vCPUs resume as its pull starts: the pull's first window must not win a race with
    # the guest's start and make the first faults queue behind it
    r = rig(chunk_bytes=16 * PAGE_SIZE)
    r.loop_against("faults")
    started = time.monotonic()
    r.loop_against_real_source("background")
    zero = [p for p in range(r.pages) if r.manifest.kinds[p] == 1]
    _wait(lambda: all(r.plane.state(p) == PRESENT for p in zero), what="the zero sweep")
    time.sleep(0.05)
    assert r.plane.counters("background").requests == 0
    page = _data_page(r, 100)
    r.touch_pages([page]).join(timeout=10)
    _wait(lambda: r.plane.counters("background").requests > 0, what="the pull's first request")
    assert time.monotonic() - started < 0.2  # it went on at the fault, not at its fallback
    _wait(lambda: r.plane.complete, what="completion")
    assert bytes(r.guest.view) == r.image


def test_the_background_keeps_its_window_of_bytes_in_flight_in_as_many_runs_as_that_takes(rig):
    # after the zero sweep every absent run is 3 data pages (every 4th page is zero), as after
    # scattered faults: a run at a time would cost a round trip per 12 KiB
    r = rig(chunk_bytes=16 * PAGE_SIZE, window=1)
    held, _ = r.loop_against("background", hold=_data_page(r))
    assert held.held.wait(10)  # the first run's reply is held
    _wait(lambda: r.plane.counters("background").requests >= 6, what="the window's runs")
    time.sleep(0.1)
    # runs of 12 KiB until 64 KiB (the window: one chunk) is reached, and no more
    assert r.plane.counters("background").requests == 6
    held.release.set()
    _wait(lambda: r.plane.complete, what="completion")
    assert bytes(r.guest.view) == r.image


def test_the_background_claims_nothing_new_while_a_vcpu_waits_on_one_of_its_runs(rig):
    # the window holds 6 runs of 3 data pages (pages 0-2, 4-6, ..., 20-22); a vCPU faults in
    # the sixth, and the first five are installed while it waits
    r = rig(chunk_bytes=16 * PAGE_SIZE, window=1)
    r.loop_against("faults")
    source, _ = r.loop_against("background", hold=(0, 20))
    first, sixth = source.holds[0], source.holds[20]
    assert first[0].wait(10)
    _wait(lambda: r.plane.counters("background").requests == 6, what="the window's runs")
    vcpu = r.touch_pages([21])
    _wait(lambda: r.plane.counters("urgent").faults_waited == 1, what="the fault on the pull")
    first[1].set()
    assert sixth[0].wait(10)
    _wait(lambda: r.plane.state(16) == PRESENT, what="the first five runs installed")
    time.sleep(0.2)  # the window has room, and the quiet time after the fault is long over
    assert r.plane.counters("background").requests == 6
    sixth[1].set()
    vcpu.join(timeout=10)
    assert not vcpu.is_alive()
    _wait(lambda: r.plane.complete, what="completion")
    assert bytes(r.guest.view) == r.image


def test_a_vcpu_waiting_on_a_run_whose_link_broke_is_served_after_the_reconnect(rig):
    # the broken stream gives the run back: the vCPU then waits on no job in flight, and the
    # pull, which stands back while one waits on its jobs, must claim the run again
    r = rig(chunk_bytes=16 * PAGE_SIZE, window=1)
    r.loop_against("faults")
    page = _data_page(r)
    source, loop = r.loop_against("background", hold=page)
    assert source.held.wait(10)
    vcpu = r.touch_pages([page])
    _wait(lambda: r.plane.counters("urgent").faults_waited == 1, what="the fault on the pull")
    source.sock.shutdown(socket.SHUT_RDWR)  # the link breaks under the held reply
    loop.join(timeout=10)
    assert r.results["background"] == LINK and r.plane.state(page) == ABSENT
    source.release.set()
    r.loop_against_real_source("background")  # the caller reconnects
    vcpu.join(timeout=10)
    assert not vcpu.is_alive()
    _wait(lambda: r.plane.complete, what="completion")
    assert bytes(r.guest.view) == r.image


@pytest.mark.parametrize("vcpus", [1, 64])
def test_the_background_stands_back_for_a_fault_only_when_the_vcpus_can_fill_the_cpus(rig, vcpus):
    r = rig(chunk_bytes=16 * PAGE_SIZE)
    r.plane.set_vcpus(vcpus)
    assert r.plane.stands_back == (vcpus >= len(os.sched_getaffinity(0)))
    page = _data_page(r, 100)
    held, _ = r.loop_against("faults", hold=page)
    vcpu = r.touch_pages([page])
    assert held.held.wait(10)  # a fault's fetch is in flight, and stays so
    r.loop_against_real_source("background")
    time.sleep(0.3)
    requested = r.plane.counters("background").requests
    assert (requested == 0) == r.plane.stands_back
    zero = [p for p in range(r.pages) if r.manifest.kinds[p] == 1]
    swept = any(r.plane.state(p) == PRESENT for p in zero)  # the zero sweep stands back too
    assert swept != r.plane.stands_back
    held.release.set()
    vcpu.join(timeout=10)
    _wait(lambda: r.plane.complete, what="completion")
    assert bytes(r.guest.view) == r.image


def test_an_install_over_a_page_mapped_already_skips_it_with_eexist(rig):
    r = rig(chunk_bytes=PAGES * PAGE_SIZE, window=1)
    page = _data_page(r, 50)
    r.alias.view[page * PAGE_SIZE:(page + 1) * PAGE_SIZE] = r.image_page(page)
    r.uffd.continue_(r.guest.address + page * PAGE_SIZE, PAGE_SIZE)  # a racing resolver
    r.loop_against_real_source("background").join(timeout=30)
    assert r.results["background"] == DONE and r.plane.complete, r.plane.error
    assert r.plane.counters("background").eexist == 1
    assert bytes(r.guest.view) == r.image


def test_a_fault_on_a_present_page_that_was_zapped_maps_it_again(rig):
    r = rig()
    r.loop_against_real_source("faults")
    page = _data_page(r, 20)
    r.touch_pages([page]).join(timeout=10)
    from cffi_uffd.memory import dontneed
    dontneed(r.guest.address + page * PAGE_SIZE, PAGE_SIZE)  # the guest's mapping is gone
    again = r.touch_pages([page])
    again.join(timeout=10)
    assert not again.is_alive()
    assert r.plane.counters("urgent").requests == 1  # not fetched again: only mapped again
    assert r.guest_page(page) == r.image_page(page)


def test_a_page_that_arrives_wrong_once_is_fetched_again_and_installed_right(rig):
    r = rig()
    page = _data_page(r, 30)
    r.loop_against("faults", corrupt={page: 1})
    r.touch_pages([page]).join(timeout=10)
    assert r.plane.counters("urgent").refetched_pages == 1
    assert r.plane.mismatched_pages == 0
    assert r.guest_page(page) == r.image_page(page)


def test_a_page_that_stays_wrong_fails_the_migration_and_is_never_installed(rig):
    r = rig()
    page = _data_page(r, 40)
    _, loop = r.loop_against("faults", corrupt={page: 99})
    vcpu = r.touch_pages([page])
    loop.join(timeout=10)
    assert r.results["faults"] == FAILED
    assert f"(first: page {page}); refusing to install them" in r.plane.error
    assert r.plane.mismatched_pages == 1 and r.plane.state(page) == URGENT
    assert vcpu.is_alive()  # never given the wrong page
    r.let_vcpus_go()
    vcpu.join(timeout=10)


def test_a_reply_whose_header_does_not_match_its_request_fails_the_migration(rig):
    r = rig()
    _, loop = r.loop_against("faults", wrong_header=True)
    page = _data_page(r, 60)
    vcpu = r.touch_pages([page])
    loop.join(timeout=10)
    assert r.results["faults"] == FAILED
    assert "out of step" in r.plane.error and r.plane.state(page) != PRESENT
    r.let_vcpus_go()
    vcpu.join(timeout=10)


def test_a_link_cut_mid_chunk_gives_the_claims_back_and_a_new_link_completes(rig):
    r = rig(chunk_bytes=32 * PAGE_SIZE, window=2)
    r.loop_against("background", cut_after_bytes=40 * PAGE_SIZE + 100)[1].join(timeout=10)
    assert r.results["background"] == LINK
    states = r.plane.states()
    assert states.count(BACKGROUND) == 0  # nothing left claimed, nothing half-installed
    assert 0 < states.count(PRESENT) < PAGES and states.count(ABSENT) > 0
    r.loop_against_real_source("background").join(timeout=30)
    assert r.results["background"] == DONE and r.plane.complete, r.plane.error
    assert bytes(r.guest.view) == r.image


def test_a_fault_whose_link_is_cut_mid_reply_is_requested_again_on_the_new_link(rig):
    r = rig()
    _, loop = r.loop_against("faults", cut_after_bytes=2000)
    page = _data_page(r, 70)
    vcpu = r.touch_pages([page])
    loop.join(timeout=10)
    assert r.results["faults"] == LINK and vcpu.is_alive()
    source, _ = r.loop_against("faults")
    vcpu.join(timeout=10)
    assert not vcpu.is_alive() and source.requests == [(page * PAGE_SIZE, PAGE_SIZE)]
    assert r.guest_page(page) == r.image_page(page)


def test_the_bandwidth_cap_holds_the_background_pull_to_its_rate(rig):
    r = rig(pages=1024, chunk_bytes=16 * PAGE_SIZE, window=1, cap_bytes_per_s=4 << 20)
    began = time.monotonic()
    r.loop_against_real_source("background").join(timeout=30)
    took = time.monotonic() - began
    assert r.results["background"] == DONE and r.plane.complete, r.plane.error
    # the cap is on what travels, the data pages: the last chunk may start when all but it
    # have had their time at 4 MiB/s
    data = sum(1 for k in r.manifest.kinds if k == 0) * PAGE_SIZE
    assert took >= (data - 16 * PAGE_SIZE) / (4 << 20) * 0.9


def test_a_zero_page_that_is_not_zero_in_the_guests_memory_is_fetched_and_installed_right(rig):
    r = rig()
    zero = next(p for p in range(r.pages) if r.manifest.kinds[p] == 1)
    r.alias.view[zero * PAGE_SIZE:zero * PAGE_SIZE + 5] = b"dirty"  # the guest's memfd was not fresh
    source, _ = r.loop_against("faults")
    r.touch_pages([zero]).join(timeout=10)
    assert source.requests == [(zero * PAGE_SIZE, PAGE_SIZE)]  # nothing, then the refetch
    assert r.plane.counters("urgent").refetched_pages == 1
    assert r.guest_page(zero) == bytes(PAGE_SIZE)


def test_each_urgent_fetch_is_stamped_in_order_from_the_vcpus_access_to_its_resume(rig):
    r = rig()
    r.loop_against_real_source("faults")
    pages = [_data_page(r, p) for p in (5, 50, 90, 130)]
    addresses = array("Q", (r.guest.address + p * PAGE_SIZE for p in pages))
    done = touch(addresses)
    _wait(lambda: all(r.plane.state(p) == PRESENT for p in pages), what="the installs counted")
    fetches = r.plane.fetches()
    assert set(fetches) == set(pages)
    for i, page in enumerate(pages):
        start, stall = done.start_ns[i], done.latency_ns[i]
        stamps = fetches[page]
        assert start <= stamps[0] <= stamps[1] <= stamps[2] <= stamps[3] <= stamps[4] <= stamps[5]
        # verified before the vCPU resumed; CONTINUE wakes it before the ioctl returns, so
        # the vCPU may resume before the installed stamp
        assert stamps[4] <= start + stall
    t = Telemetry(r.plane, Backing("hgm", "shmem-emulated-hgm", "hgm (emulated on shmem)",
                                   PAGE_SIZE, PAGE_SIZE, 2 << 20))
    t.observe_stalls([[p, done.start_ns[i], done.latency_ns[i]] for i, p in enumerate(pages)])
    summary = t.stage_summary()
    assert summary["faults_joined"] == len(pages)
    assert set(summary) >= {"queue", "request", "network", "receive", "verify", "install", "wake"}
    assert summary["stall"]["total"] == pytest.approx(sum(done.latency_ns) / 1e9)
    median = summary["median_fault"]
    assert sum(v for k, v in median.items() if k != "stall") == pytest.approx(median["stall"])


def test_a_dirty_zero_page_whose_refetch_is_cut_is_checked_again_on_the_new_link(rig):
    r = rig()
    zero = next(p for p in range(r.pages) if r.manifest.kinds[p] == 1)
    r.alias.view[zero * PAGE_SIZE:zero * PAGE_SIZE + 5] = b"dirty"
    _, loop = r.loop_against("faults", cut_after_bytes=0)  # the refetch's reply never comes
    vcpu = r.touch_pages([zero])
    loop.join(timeout=10)
    assert r.results["faults"] == LINK and vcpu.is_alive()
    source, _ = r.loop_against("faults")
    vcpu.join(timeout=10)
    assert not vcpu.is_alive() and source.requests == [(zero * PAGE_SIZE, PAGE_SIZE)]
    assert r.guest_page(zero) == bytes(PAGE_SIZE)

"""The model's shaped link is one bottleneck for the urgent stream and the pull, and with whole
huge pages the pull's first window leaves before the first fault (as measured here)."""

from __future__ import annotations

import pytest
import simpy

from migrator.model import sim, workload
from migrator.model.bottleneck import Bottleneck, shares
from migrator.model.calibration import first_window_bytes, fit_pull_first

LINK = 25e6  # bytes/s: 200 Mbit/s


def test_flows_share_the_link_max_min_fair():
    assert shares(LINK, [LINK, LINK]) == [LINK / 2, LINK / 2]
    # a flow its own work holds below an even share leaves the rest to the other
    assert shares(LINK, [5e6, LINK]) == [5e6, 20e6]
    assert shares(LINK, [5e6, 8e6]) == [5e6, 8e6]


def _finish_times(pull_bytes: float, reply_bytes: float) -> dict:
    env = simpy.Environment()
    link = Bottleneck(env, LINK)
    done = {}

    def flow(name, nbytes, at):
        yield env.timeout(at)
        yield link.send(name, nbytes, LINK)
        done[name] = env.now

    env.process(flow("pull", pull_bytes, 0.0))
    env.process(flow("urgent", reply_bytes, 0.01))
    env.run()
    return done


def test_a_reply_beside_the_pull_takes_twice_as_long_and_the_pull_waits_for_it():
    alone = 2 * 2**20 / LINK
    t = _finish_times(4 * 2**20, 2 * 2**20)
    assert t["urgent"] - 0.01 == pytest.approx(2 * alone, rel=1e-6)
    # the link moved every byte at its rate, no more, no less
    assert t["pull"] == pytest.approx(6 * 2**20 / LINK, rel=1e-6)


def _whole_page_case(pull_first: bool) -> sim.Case:
    memory, pages = 64 << 20, (64 << 20) // 4096
    link = sim.Link(rtt=2e-3, urgent_rate=LINK, background_rate=LINK, rate=LINK, queue=5e-3)
    return sim.Case(mode="hugepage", memory=memory, granule=2 << 20, vcpus=4,
                    sequences=workload.sequences("uniform", pages, 4, 200, 3),
                    zeros=workload.zero_map(pages, 3), link=link,
                    cost=sim.FaultCost([(0.0, 50e-6), (1.0, 150e-6)]), host_cpus=2,
                    pull_first=pull_first)


def test_with_whole_pages_the_first_window_travels_in_the_background_when_the_pull_goes_first():
    first = _whole_page_case(True)
    config = {"memory_bytes": first.memory, "seed": 3,
              "background_policy": {"chunk_bytes": first.chunk, "window": first.window}}
    window = first_window_bytes(config, first.granule)
    assert window > 0
    ahead = sim.simulate(first)
    assert ahead.bytes_background == window
    # faults first: the pull stands back from the first fault to the last
    behind = sim.simulate(_whole_page_case(False))
    assert behind.bytes_background == 0
    # the first faults share the link with that window: they wait longer
    assert max(ahead.stalls) > max(behind.stalls)


def test_the_calibration_tells_the_order_from_the_first_windows_bytes():
    config = {"memory_bytes": 64 << 20, "seed": 3,
              "background_policy": {"chunk_bytes": 4 << 20, "window": 2}}
    window = first_window_bytes(config, 2 << 20)
    run = {"granularity_bytes": 2 << 20, "faults": 70, "faults_waited_on_background": 0}
    assert fit_pull_first([{**run, "bytes_background": window}] * 2 +
                          [{**run, "bytes_background": 0}], [config] * 3)
    assert not fit_pull_first([{**run, "bytes_background": 0}] * 2, [config] * 2)


def test_the_pull_steps_in_only_when_no_fault_was_read_or_installed_lately_as_the_c_loop():
    # dest_background.c stands back while a request is in flight (from the fault's read to its
    # reply's last byte) or a fault was read or installed in the last 0.5 ms; one vCPU on a
    # 2 ms link leaves it only the moments when its next fault comes later than that
    memory, pages = 32 << 20, (32 << 20) // 4096
    link = sim.Link(rtt=2e-3, urgent_rate=LINK, background_rate=LINK, rate=LINK, queue=5e-3)
    case = sim.Case(mode="hgm", memory=memory, granule=4096, vcpus=1,
                    sequences=workload.sequences("uniform", pages, 1, 300, 3),
                    zeros=workload.zero_map(pages, 3), link=link,
                    cost=sim.FaultCost([(0.0, 50e-6), (1.0, 150e-6)], before_read=20e-6,
                                       after_reply=20e-6), host_cpus=1)
    m = sim._Migration(case)
    seen = []
    claim = m._claim_run

    def recorded(most):
        seen.append((m.env.now, m.urgent_busy, m.env.now - m.last_fault))
        return claim(most)

    m._claim_run = recorded
    out = m.run()
    during = [s for s in seen if s[0] < out.vcpu_run]
    assert during, "no gap between a reply and the next read: the pull never stepped in"
    for _, in_flight, since_last in during:
        assert in_flight == 0 and since_last >= sim.STAND_BACK_SECONDS


def test_faults_first_the_pull_waits_for_the_vcpus_measured_start():
    from migrator.model.calibration import fit_vcpu_start

    # the guest's announcements, measured; a run from before they were leaves no vote
    runs = [{"vcpus_started_after_seconds": s} for s in (0.004, 0.021, 0.009)] + [{}]
    assert fit_vcpu_start(runs) == 0.009 and fit_vcpu_start([{}]) is None
    late = _whole_page_case(False)
    late.vcpu_start = 0.05
    out = sim.simulate(late)
    # nothing moves before the vCPUs start: the first fault's bytes and the pull's alike
    early = _whole_page_case(False)
    early.vcpu_start = 0.0
    assert out.migration - sim.simulate(early).migration == pytest.approx(0.05, abs=0.01)
    assert out.bytes_urgent > 0

"""The shaped link between the two namespaces: measured, and the measurement catches a link
whose shaping did not take effect."""

from __future__ import annotations

import subprocess
import sys

import pytest

from migrator.netns import LinkSpec, TwoHostLink, ns
from migrator.netns.link import DEST_DEV, SOURCE_DEV

from .conftest import ours

MEASURE_S = 1.0


def _link(tmp_path, bandwidth=None, rtt=None, loss=None) -> TwoHostLink:
    return TwoHostLink(LinkSpec.parse(bandwidth, rtt, loss), tmp_path, say=lambda _: None,
                       measure_seconds=MEASURE_S)


def test_bandwidth_is_shaped_by_tbf_in_both_directions(tmp_path):
    with _link(tmp_path) as free:
        unshaped = free.record["measured"]["throughput_bits_per_second"]
    with _link(tmp_path, "200mbit") as link:
        r = link.record
        shaped = r["measured"]["throughput_bits_per_second"]
        assert r["applied"]["bandwidth"]["method"] == "tbf"
        for dev in (SOURCE_DEV, DEST_DEV):
            assert any(" tbf rate 200000000bit" in c for c in r["applied"]["commands"][dev])
        assert "tbf" in r["tc_before_run"]["source"] and "tbf" in r["tc_before_run"]["dest"]
    assert "tbf" in r["tc_after_run"]["source"]  # counters as the link was taken down
    assert 0.75 * 200e6 <= shaped <= 1.1 * 200e6, f"{shaped / 1e6:.0f} Mbit/s for 200mbit"
    assert shaped < unshaped / 4, (f"shaped {shaped / 1e6:.0f} Mbit/s is not far below the "
                                   f"unshaped {unshaped / 1e6:.0f} Mbit/s")
    assert r["shaping_effective"] and not r["problems"]


def test_rtt_is_added_and_measured(tmp_path):
    with _link(tmp_path, rtt="20ms") as link:
        r = link.record
    rtt = r["measured"]["rtt_seconds"]
    assert rtt["p50"] >= 0.018 and rtt["min"] >= 0.018, rtt
    assert rtt["p50"] < 0.030, rtt
    method = r["applied"]["delay"]["method"]
    assert method == ("netem" if r["applied"]["netem"]["available"] else "relay-delay")
    if method == "relay-delay":
        assert "netem" in r["applied"]["delay"]["detail"]  # says why: no sch_netem here
        assert r["measured"]["path"].endswith("relay -> source port")
    assert r["shaping_effective"]


@pytest.mark.parametrize("rtt", ["200us", "1ms"])
def test_a_small_rtt_is_reached_by_stepping_the_delay(tmp_path, rtt):
    """A single step, (target - floor) / 2 each way, fell short at 200 us in 1 of 3 tries: the
    relay's hand-off overlaps the delay. The steps reach the target, and are recorded."""
    target = LinkSpec.parse(None, rtt, None).rtt
    with _link(tmp_path, rtt=rtt) as link:
        r = link.record
    assert r["shaping_effective"], r["problems"]
    got = r["measured"]["rtt_seconds"]["p50"]
    assert 0.9 * target <= got <= 1.3 * target + 50e-6, (got, r["applied"]["delay"])
    delay = r["applied"]["delay"]
    if delay["method"] == "relay-delay":
        assert delay["steps"] and delay["steps"][-1]["measured_rtt_seconds"] > 0
        # (the path's own RTT is not asserted below the target: measured once on a fresh
        # namespace pair it read 208 us in one suite run of 200 us, where it is ~130 us)


def test_an_rtt_below_the_paths_floor_is_refused_naming_the_floor(tmp_path):
    with _link(tmp_path, rtt="20ms") as link:
        link.spec = LinkSpec.parse(None, "100ms", None)  # the judge now expects far more
        problems, _ = link._judge(link._measure())
    if link.record["applied"]["delay"]["method"] == "relay-delay":
        assert any("delay did not take effect" in p and "without delay, is" in p
                   for p in problems), problems


def test_loss_drops_packets_in_the_kernel(tmp_path):
    with _link(tmp_path, loss="5%") as link:
        r = link.record
    assert r["applied"]["loss"]["method"] in ("netem", "cls_bpf-random-drop")
    one_way = r["measured"]["loss"]["one_way_loss_estimate"]
    assert 0.02 <= one_way <= 0.10, r["measured"]["loss"]


def test_a_link_whose_shaping_is_gone_is_caught(tmp_path):
    """Take the tbf away behind the link's back: the same measurement must flag it."""
    with _link(tmp_path, "200mbit", "5ms") as link:
        assert link.record["shaping_effective"]
        for name, dev in ((link.source_ns, SOURCE_DEV), (link.dest_ns, DEST_DEV)):
            ns.tc(name, "qdisc", "del", "dev", dev, "root")
        link._relay.stdin.write("delay 0\n")
        link._relay.stdin.flush()
        link._relay.stdout.readline()
        problems, _ = link._judge(link._measure())
    assert any("bandwidth shaping did not take effect" in p for p in problems), problems
    assert any("delay did not take effect" in p for p in problems), problems


def test_namespaces_are_removed_on_exit_and_on_error(tmp_path):
    with _link(tmp_path) as link:
        names = {link.source_ns, link.dest_ns}
        assert names <= set(ns.listed())
        helpers = ns.pids(link.source_ns)
        assert helpers  # the probe server
    assert not names & set(ns.listed())
    with pytest.raises(RuntimeError, match="boom"):
        with _link(tmp_path) as link:
            names = {link.source_ns, link.dest_ns}
            raise RuntimeError("boom")
    assert not names & set(ns.listed())
    assert ours() == []
    for pid in helpers:
        assert not ns.owner_alive(pid)


def test_the_sweeper_removes_namespaces_of_dead_runs_only(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = ns.names_for(owner=dead.pid)
    alive = ns.names_for()
    try:
        for name in (*stale, *alive):
            ns.add(name)
        swept = ns.sweep_stale()
        assert set(stale) <= set(swept)
        assert not set(stale) & set(ns.listed())
        assert set(alive) <= set(ns.listed())
    finally:
        for name in (*stale, *alive):
            ns.delete(name)

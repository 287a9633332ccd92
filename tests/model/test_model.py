"""`migrator model`: calibrated on two small two-host runs, it predicts a third run it never
saw (another seed, pattern and link) within a loose band, and a 64 GiB guest in seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from migrator.model import calibration, predict, workload
from migrator.sweep import parse, runner

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="two hosts need root (netns, tc)")

CAL = {"modes": ["hgm"], "seed": 5, "grid": {
    "link": ["200mbit/1ms", "unshaped"], "memory": ["32MiB"], "hugepage_size": ["2M"],
    "vcpus": [4], "pattern": ["hotset"], "accesses": [500]}}
HELD_OUT = {"modes": ["hgm"], "seed": 9, "grid": {
    "link": ["500mbit/2ms"], "memory": ["32MiB"], "hugepage_size": ["2M"], "vcpus": [4],
    "pattern": ["uniform"], "accesses": [500]}}


def _runs(out):
    return [(f.parent, json.loads(f.read_text()))
            for f in sorted(out.glob("points/*/rep-*/results.json"))]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    base = tmp_path_factory.mktemp("model")
    counts = runner.run(parse(CAL), base / "cal", say=lambda s: None)
    assert counts["failed"] == 0
    runs = _runs(base / "cal")
    cal = calibration.fit(runs)
    cal["host"] = {"cores": os.cpu_count()}
    predict.fit_startup(cal, runs)
    path = calibration.save(cal, base / "calibration.json", cal["host"], [str(p) for p, _ in runs])
    return calibration.load(path), base


def test_calibrated_on_two_runs_it_predicts_a_third_it_never_saw(fitted):
    cal, base = fitted
    counts = runner.run(parse(HELD_OUT), base / "held-out", say=lambda s: None)
    assert counts["failed"] == 0
    (path, measured), = _runs(base / "held-out")
    got = measured["modes"][0]
    want = predict.predict(cal, predict.question_of(measured), ["hgm"])["modes"][0]
    # the faults follow from the pattern and the pull's race with it (the same point measured
    # twice here: 1382 and 1045 faults, and once 941 against 1333 predicted): the tolerance is
    # wider than that spread, and still fails a model off by half; the stall follows from the
    # link and the costs
    assert abs(want["faults"] - got["faults"]) <= 0.5 * got["faults"]
    for key in ("p50", "total"):
        m, p = got["vcpu_stall_seconds"][key], want["vcpu_stall_seconds"][key]
        assert 0.5 * m <= p <= 2 * m, (key, m, p)
    assert 0.5 * got["duration_seconds"] <= want["duration_seconds"] <= 2 * got["duration_seconds"]


def test_a_64_gib_guest_is_predicted_from_aggregated_pages(fitted):
    cal, base = fitted
    done = subprocess.run(
        [sys.executable, "-m", "migrator.cli", "model", "predict", "--memory", "64GiB", "--vcpus",
         "16", "--accesses", "500", "--bandwidth", "25gbit", "--rtt", "50us", "--hugepage-size",
         "1G", "--calibration", str(base / "calibration.json"), "--json"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    hgm, huge = out["modes"]
    assert (hgm["mode"], huge["mode"]) == ("hgm", "hugepage")
    assert huge["calibrated_as"] == "hgm"  # no hugepage run was calibrated: it says so
    zeros = workload.zero_map(64 << 18, 42)  # one 4 GiB period of the image, tiled
    data = (len(zeros) - sum(zeros)) * ((64 << 18) // len(zeros))
    for m in out["modes"]:
        assert m["faults"] > 0
        moved = m["bytes_urgent"] + m["bytes_background"]
        assert abs(moved - data * 4096) <= 0.02 * data * 4096  # every data page, once
    # a whole 1 GiB page per fault: fewer faults, each far longer
    assert huge["faults"] < hgm["faults"]
    assert huge["vcpu_stall_seconds"]["p50"] > 100 * hgm["vcpu_stall_seconds"]["p50"]


def _case(**kw) -> "sim.Case":
    from migrator.model import sim

    memory, pages = 32 << 20, (32 << 20) // 4096
    link = sim.Link(rtt=40e-6, urgent_rate=2.5e9, background_rate=0.6e9)
    return sim.Case(mode="hgm", memory=memory, granule=4096, vcpus=4,
                    sequences=workload.sequences("uniform", pages, 4, 300, 3),
                    zeros=workload.zero_map(pages, 3), link=link,
                    cost=sim.FaultCost([(0.0, 50e-6), (1.0, 150e-6)]), host_cpus=2, **kw)


def test_the_migration_ends_at_a_tick_of_the_destinations_watch():
    from migrator.model import sim

    # the watch checks at offset + k * period from the migration's start, never between
    ticked = sim.simulate(_case(tick_period=0.1, tick_offset=0.006)).migration
    k = round((ticked - 0.006) / 0.1)
    assert k >= 1 and abs(ticked - (0.006 + k * 0.1)) < 1e-9
    assert calibration.fit_completion_tick([0.106, 0.2075, 0.309, 1.818], 0.1) == pytest.approx(
        {"period": 0.1007, "offset": 0.0061}, abs=2e-4)


def test_faults_from_the_start_keep_the_pull_back_on_a_full_host():
    from migrator.model import sim

    # 4 vCPUs on 2 CPUs fault from the hand-over on: the pull stands back, so no fault waits
    # on a 4 MiB chunk (which takes ~7 ms here); the stalls are the faults' own
    out = sim.simulate(_case())
    assert out.stalls and max(out.stalls) < 2e-3
    assert out.bytes_urgent + out.bytes_background > 0

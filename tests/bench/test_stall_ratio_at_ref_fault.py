"""STALL_RATIO and the estimate beside it, at ref-fault's pace: from a real experiment that
completed verified in both modes and ref-fault run beside it with as many threads as the guest
has vCPUs. No timing is asserted: what is checked is which measurements the estimate is made of."""

from __future__ import annotations

import json
import statistics
import subprocess

import pytest

from migrator.bench import floors
from migrator.bench.figures import Measurement, stall_ratio
from migrator.bench.result import stall_ratio_at_ref_fault
from migrator.orchestration import migrator_command
from migrator.protocol.manifest import DATA, ZERO

VCPUS = 2


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    done = subprocess.run(migrator_command(
        "experiment", "--memory", "64MiB", "--hugepage-size", "2M", "--modes", "hgm,hugepage",
        "--vcpus", str(VCPUS), "--accesses", "300", "--out", str(out), "--json"),
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), out / "results.json"


def test_the_estimate_charges_each_hgm_stall_what_a_reference_fault_with_as_many_threads_costs(
        experiment, tmp_path):
    results, where = experiment
    stall = Measurement()
    stall_ratio(stall, "the experiment", results, str(where))
    kinds = tmp_path / "image.kinds"
    kinds.write_bytes(bytes(ZERO if i % 4 == 3 else DATA for i in range(4096)))
    p4 = Measurement(reference=[floors.ref_fault(kinds, touches=200, threads=VCPUS,
                                                 data_only=False) for _ in range(3)])

    estimate = stall_ratio_at_ref_fault({"P4": p4, "STALL": stall}, threads=VCPUS)

    modes = {x["mode"]: x for x in results["modes"]}
    sample = stall.figure[0]
    assert sample["hgm_stalls"] == modes["hgm"]["vcpu_stall_seconds"]["count"] > 0
    assert sample["hugepage_stall_seconds"] == modes["hugepage"]["vcpu_stall_seconds"]["total"] > 0
    per_stall = VCPUS / statistics.median(r["faults_per_s"] for r in p4.reference)
    assert estimate["seconds_per_stall"] == per_stall
    assert estimate["raw"] == [sample["hgm_stalls"] * per_stall / sample["hugepage_stall_seconds"]]
    assert estimate["value"] == estimate["raw"][0]


def test_the_estimate_is_refused_without_a_reference_of_as_many_threads_as_vcpus_or_a_stall(
        experiment):
    results, where = experiment
    stall = Measurement()
    stall_ratio(stall, "the experiment", results, str(where))
    two_runs = Measurement(reference=[{"faults_per_s": 1.0}] * 2)

    short = stall_ratio_at_ref_fault({"P4": two_runs, "STALL": stall}, threads=VCPUS)
    other_vcpus = stall_ratio_at_ref_fault({"P4": Measurement(reference=[{"faults_per_s": 1.0}] * 3),
                               "STALL": stall}, threads=VCPUS + 2)

    assert "value" not in short and "(have 2)" in short["refused"]
    assert "value" not in other_vcpus
    assert f"a default experiment with {VCPUS + 2} vCPUs" in other_vcpus["refused"]
    none_stalled = Measurement(figure=[{**stall.figure[0], "hugepage_stall_seconds": 0.0}])
    zero = stall_ratio_at_ref_fault({"P4": Measurement(reference=[{"faults_per_s": 1.0}] * 3),
                                     "STALL": none_stalled}, threads=VCPUS)
    assert "value" not in zero and "(have 0)" in zero["refused"]
    refused = Measurement(figure=stall.figure, refused=["STALL_RATIO experiment 2 failed"])
    carried = stall_ratio_at_ref_fault({"P4": Measurement(reference=[{"faults_per_s": 1.0}] * 3),
                                        "STALL": refused}, threads=VCPUS)
    assert carried["refused"] == "STALL_RATIO experiment 2 failed"

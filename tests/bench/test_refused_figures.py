"""The bench computes a figure only from a migration that completed verified, on real daemons:
a completed one gives its data-page faults from the guest's trace; a figure over one caught
still running, or one that failed for real (its source went away), is refused, named, and
makes the bench exit non-zero."""

from __future__ import annotations

import json

import pytest

from cffi_uffd import SIZE_2M
from migrator.bench import figures, render
from migrator.bench.figures import Measurement
from migrator.bench.measure import Plan
from migrator.bench.result import compose
from migrator.bench.scenarios import Rig, Run, Scenario
from migrator.host import pools
from migrator.orchestration import start_dest, start_guest, wait_for
from migrator.protocol.manifest import DATA, ZERO

MEMORY = 64 << 20
HELD_BACK_S = 2.0


@pytest.fixture
def rig(tmp_path):
    with pools.reserved(SIZE_2M, MEMORY // SIZE_2M) as got:
        if got < MEMORY // SIZE_2M:
            pytest.skip(f"the kernel gave {got} 2 MiB pages")
        rig = Rig(MEMORY, tmp_path / "logs", seed=3)
        try:
            yield rig
        finally:
            rig.close()


def test_a_verified_migration_gives_its_data_page_faults_from_the_trace(rig):
    run = rig.run(Scenario("P1", "hgm", SIZE_2M, 1, "uniform", 300, HELD_BACK_S, seed=2))
    assert run.problems() == [], run.summary()
    assert run.backing == {"backing": "shmem-emulated-hgm",
                           "backing_label": "hgm (emulated on shmem)"}
    m = Measurement()
    m.attempt(lambda: figures.data_fault_latency(m, run, bytes(rig.manifest.kinds), HELD_BACK_S))
    assert m.refused == []
    [sample] = m.figure
    touched = set(json.loads(run.trace.read_text())["vcpus"][0]["pages"])
    kinds = [rig.manifest.kinds[p] for p in touched]
    # every first touch faulted (nothing was pulled in the background yet), each counted once
    assert sample["data_faults"] == kinds.count(DATA)
    assert sample["zero_faults"] == kinds.count(ZERO)
    assert 0 < sample["p50"] <= sample["p99"]


def test_figures_from_a_migration_caught_running_or_failed_are_refused(rig, tmp_path):
    sock = str(tmp_path / "guest.sock")
    trace = tmp_path / "trace.json"
    dest = start_dest(rig.url, "hgm", SIZE_2M, sock, tmp_path, token=rig.token,
                      env={"MIGRATOR_TOKEN": rig.token},
                      extra=["--background-delay", str(HELD_BACK_S), "--resume-deadline", "1"])
    try:
        guest = start_guest(sock, ["--vcpus", "1", "--pattern", "uniform", "--accesses", "300",
                                   "--write-ratio", "0", "--record", str(trace)], tmp_path)
        try:
            session = wait_for(lambda: dest.status()["migrations"][0]["session"], 60,
                               "the guest's migration", process=dest)
            running = dest.migration(session)  # a real report, of a migration not done yet
            rig.source.stop()  # the source goes away for good
            failed = dest.wait_phase(session, ("failed",), timeout=60)
            guest.wait(60)
            guest_result = guest.result()
        finally:
            guest.stop()
    finally:
        dest.stop()

    assert running["phase"] == "running" and running["verified_pages"] < running["pages_total"]
    assert failed["phase"] == "failed" and failed["error"]
    scenario = Scenario("P1", "hgm", SIZE_2M, 1, "uniform", 300, HELD_BACK_S)
    caught = Run(scenario, migration=running, guest=None, trace=trace, label="P1 run 1")
    lost = Run(scenario, migration=failed, guest=guest_result, trace=trace, label="P1 run 2")
    m = Measurement()
    for run in (caught, lost):
        m.attempt(lambda: figures.data_fault_latency(m, run, bytes(rig.manifest.kinds),
                                                     HELD_BACK_S))
    assert m.figure == []
    assert m.refused[0].startswith("P1 run 1 did not complete verified: phase running")
    assert f"verified {running['verified_pages']} of {running['pages_total']} pages" in m.refused[0]
    assert "the guest did not check its memory" in m.refused[0]
    assert m.refused[1].startswith("P1 run 2 did not complete verified: phase failed")
    assert failed["error"] in m.refused[1]

    plan = Plan.make(quick=True)
    config = {"quick": True, "memory_bytes": MEMORY, "hugepage_size": SIZE_2M, "cores": 2,
              "repeats": plan.repeats}
    result = compose(plan, config, {"P1": m, **{k: Measurement() for k in
                                                ("P1bg", "P2", "P3", "P4", "STALL")}})
    assert result["P1_p50"] is None and result["P1_p99"] is None and result["met"]["P1_p50"] is None
    assert "P1 run 2 did not complete verified: phase failed" in result["refused"]["P1_p50"]
    assert "figure" not in result["figures"]["P1_p50"]
    assert result["backings"]["hgm"]["backing_label"] == "hgm (emulated on shmem)"
    # each figure names the backing behind it (none measured for hugepage here)
    assert result["figures"]["P1_p50"]["backing"] == {"hgm": "shmem-emulated-hgm"}
    assert result["figures"]["STALL_RATIO"]["backing"] == {"hgm": "shmem-emulated-hgm",
                                                           "hugepage": None}
    assert render.exit_status(result, check=False) == render.REFUSED
    assert "P1_p50" in render.text(result) and "REFUSED: P1 run 1" in render.text(result)

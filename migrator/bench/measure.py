"""The bench's run: migrations for each figure and the reference program of each, in rounds.

Each round migrates a guest once per figure and runs that figure's reference program right
after it, so that a figure and its reference see the machine in the same mood; each key is then
the median of its figure's samples over the rounds ÷ the median of its reference's runs
(result.py). The default experiment (STALL_RATIO) runs last, after the bench has given its huge
pages back.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cffi_uffd import PAGE_SIZE, SIZE_1G, SIZE_2M

from ..errors import MigratorError
from ..host import pools
from ..orchestration import migrator_command
from ..units import format_size, hugepage_label
from . import figures, floors, result, verdict
from .figures import Measurement
from .scenarios import Rig, Scenario, replay_file

BULK_BYTES = 1 << 30  # the region ref-fault's concurrent bulk stream goes round
MAX_HUGE_PAGES_TOUCHED = 8  # with 2 MiB pages, fault on this many spread over the image
_EXPERIMENT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Plan:
    quick: bool
    memory: int
    accesses: int  # per vCPU, for P1, P1bg and P4
    # How long the background pull is held back where a figure wants faults alone: long
    # enough for the vCPUs to finish faulting first (figures.py refuses a run where they did not).
    held_back_s: float
    repeats: int = 3  # rounds
    p4_vcpus: int = 4
    min_huge_faults: int = 4
    stall_repeats: int = 3
    seed: int = 7

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(True, SIZE_1G, 1000, 2.0, stall_repeats=1)
        return cls(False, 2 * SIZE_1G, 4000, 5.0)


@contextlib.contextmanager
def _huge_pool(memory: int, say: Callable[[str], None]):
    """1 GiB pages for the whole image if the kernel gives them, else 2 MiB; given back after."""
    for size in (SIZE_1G, SIZE_2M):
        need = memory // size
        with pools.reserved(size, need) as got:
            if got >= need:
                say(f"reserved {need} x {hugepage_label(size)} huge pages")
                yield size
                return
        say(f"only {got} of {need} x {hugepage_label(size)} huge pages could be reserved")
    raise MigratorError(f"cannot reserve huge pages for a {format_size(memory)} image: free "
                        "memory, or reserve them at boot (hugepagesz=1G hugepages=N)")


@contextlib.contextmanager
def _topped_up(huge: int, count: int):
    """The pool is shared with whatever else runs on the host, which may have taken the pages
    reserved at the start: right before a step that needs them, add any that went missing
    (and give those back after)."""
    if not count:
        yield
        return
    with pools.reserved(huge, count):
        yield


def measure(plan: Plan, out: Path, say: Callable[[str], None]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    m = {key: Measurement() for key in ("P1", "P1bg", "P2", "P3", "P4", "STALL")}
    config = {"memory_bytes": plan.memory, "memory": format_size(plan.memory),
              "quick": plan.quick, "repeats": plan.repeats, "accesses_per_vcpu": plan.accesses,
              "p4_vcpus": plan.p4_vcpus, "seed": plan.seed, "cores": os.cpu_count(),
              "background_held_back_seconds": plan.held_back_s}
    with _huge_pool(plan.memory, say) as huge, \
            tempfile.TemporaryDirectory(prefix="migrator-bench-") as tmp:
        config["hugepage_size"] = huge
        say(f"starting a source with a {format_size(plan.memory)} image")
        try:
            rig = Rig(plan.memory, out / "logs", seed=plan.seed)
        except (RuntimeError, TimeoutError, OSError) as e:
            raise MigratorError(f"the bench's source did not start: {e}") from e
        try:
            _rounds(plan, rig, huge, Path(tmp), m, say)
        finally:
            rig.close()
    _experiments(plan, out, m["STALL"], say)
    return result.compose(plan, config, m)


def _rounds(plan: Plan, rig: Rig, huge: int, tmp: Path, m: dict[str, Measurement],
            say: Callable[[str], None]) -> None:
    kinds = bytes(rig.manifest.kinds)
    image_kinds = tmp / "image.kinds"
    image_kinds.write_bytes(kinds)
    per_huge, count = huge // PAGE_SIZE, plan.memory // huge
    spread = min(count, MAX_HUGE_PAGES_TOUCHED)
    touched = sorted({i * count // spread for i in range(spread)})
    huge_kinds = {}
    for h in touched:
        huge_kinds[h] = tmp / f"huge-{h}.kinds"
        huge_kinds[h].write_bytes(kinds[h * per_huge:(h + 1) * per_huge])
    replay = replay_file(tmp / "p2.trace.json", rig.manifest.pages,
                         [h * per_huge for h in touched])
    p2_migrations = -(-plan.min_huge_faults // (len(touched) * plan.repeats))
    huge_backing = f"hugetlb-{hugepage_label(huge)}"
    n, v, held = plan.accesses, plan.p4_vcpus, plan.held_back_s

    for r in range(plan.repeats):
        seed = plan.seed + r
        step = f"round {r + 1}/{plan.repeats}:"
        say(f"{step} P1 (hgm, 1 vCPU, {n} uniform accesses, the background held back), then "
            "ref-fault, 1 thread")
        p1 = rig.run(Scenario("P1", "hgm", huge, 1, "uniform", n, held, seed))
        m["P1"].attempt(lambda: figures.data_fault_latency(m["P1"], p1, kinds, held))
        m["P1"].attempt(lambda: m["P1"].reference.append(_in_seconds(
            floors.ref_fault(image_kinds, n, threads=1, data_only=True, seed=seed))))

        say(f"{step} P1bg (the same with the background pull at full speed), then ref-fault "
            "with a concurrent bulk stream")
        p1bg = rig.run(Scenario("P1bg", "hgm", huge, 1, "uniform", n, 0.0, seed))
        m["P1bg"].attempt(lambda: figures.data_fault_latency(m["P1bg"], p1bg, kinds, None))
        m["P1bg"].attempt(lambda: m["P1bg"].reference.append(_in_seconds(
            floors.ref_fault(image_kinds, n, threads=1, data_only=True, bulk_bytes=BULK_BYTES,
                             seed=seed))))

        say(f"{step} P2 (hugepage, a fault on each of {len(touched)} {hugepage_label(huge)} "
            "pages), then ref-huge on each")
        for _ in range(p2_migrations):
            with _topped_up(huge, count):
                p2 = rig.run(Scenario("P2", "hugepage", huge, replay=replay,
                                      background_delay=held))
            m["P2"].attempt(lambda: figures.huge_fault_latencies(m["P2"], p2, per_huge,
                                                                 held))
        for h in touched:
            with _topped_up(huge, 1):
                m["P2"].attempt(lambda: m["P2"].reference.append(
                    {"huge_page": h, **floors.ref_huge(huge_kinds[h], huge_backing)}))

        say(f"{step} P3/P5 (hgm, the background pull of the whole image), then ref-bulk")
        p3 = rig.run(Scenario("P3", "hgm", huge, 1, "uniform", 10, 0.0, seed))
        m["P3"].attempt(lambda: figures.pull_throughput(m["P3"], p3, plan.memory))
        backing = p3.backing["backing"] or "shmem"  # the hgm destination's
        with _topped_up(huge, 0 if backing.startswith("shmem") else count):
            m["P3"].attempt(lambda: m["P3"].reference.append(
                floors.ref_bulk(image_kinds, floors.memfd_backing(backing))))

        say(f"{step} P4 (hgm, {v} vCPUs x {n} uniform accesses), then ref-fault, {v} threads")
        p4 = rig.run(Scenario("P4", "hgm", huge, v, "uniform", n, held, seed))
        m["P4"].attempt(lambda: figures.fault_rate(m["P4"], p4, kinds, held))
        m["P4"].attempt(lambda: m["P4"].reference.append(
            floors.ref_fault(image_kinds, n, threads=v, data_only=False, seed=seed)))


def _in_seconds(ref_fault: dict) -> dict:
    return {**ref_fault, "p50": ref_fault["p50_ns"] / 1e9, "p99": ref_fault["p99_ns"] / 1e9}


def _experiments(plan: Plan, out: Path, m: Measurement, say: Callable[[str], None]) -> None:
    """STALL_RATIO: the default experiment (2 GiB, 1 GiB pages, 4 vCPUs x 5000 zipf), as
    `make run` runs it, in its own process with its own huge pages."""
    for r in range(plan.stall_repeats):
        label = f"STALL_RATIO experiment {r + 1}"
        say(f"{label}/{plan.stall_repeats}: the default experiment")
        where = out / f"experiment-{r + 1}"
        try:
            done = subprocess.run(migrator_command("experiment", "--out", str(where), "--json"),
                                  capture_output=True, text=True, timeout=_EXPERIMENT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            m.refused.append(f"{label} still running after {_EXPERIMENT_TIMEOUT_S} s")
            continue
        if done.returncode or not done.stdout.strip():
            m.refused.append(f"{label} failed (exit {done.returncode}): "
                             f"{verdict.gist(done.stderr)} (its log: {where})")
            continue
        m.attempt(lambda: figures.stall_ratio(m, label, json.loads(done.stdout),
                                              str(where / "results.json")))


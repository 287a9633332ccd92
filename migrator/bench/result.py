"""The bench's JSON: each key the median of its figure's samples ÷ the median of its reference's
runs, the goals and whether they were met, and a refusal instead of a number where a migration
behind the figure did not complete verified or a reference program failed."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from .figures import Measurement
from .keys import KEYS, goals_for, met

if TYPE_CHECKING:
    from .measure import Plan

SCHEMA = "migrator/bench/2"
MIN_REFERENCE_RUNS = 3
# the modes whose migrations make each key's figure: its entry names their backing
KEY_MODES = {"P1_p50": ("hgm",), "P1_p99": ("hgm",), "P1bg_p50": ("hgm",), "P1bg_p99": ("hgm",),
             "P2": ("hugepage",), "P3": ("hgm",), "P4": ("hgm",), "P5": ("hgm",),
             "STALL_RATIO": ("hgm", "hugepage")}


def _median(samples: list[dict], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def _key(m: Measurement, fig: str, ref: str | None, unit: str, what: str,
         min_samples: int) -> dict:
    entry = {"what": what, "unit": unit, "figure_raw": [s[fig] for s in m.figure],
             "reference_raw": [s[ref] for s in m.reference] if ref else None}
    if m.refused:
        entry["refused"] = "; ".join(dict.fromkeys(m.refused))
    elif len(m.figure) < min_samples or (ref and len(m.reference) < MIN_REFERENCE_RUNS):
        entry["refused"] = (f"too few measurements: {len(m.figure)} figure sample(s), "
                            f"{len(m.reference)} reference run(s)")
    else:
        entry["figure"] = _median(m.figure, fig)
        entry["reference"] = _median(m.reference, ref) if ref else None
        entry["value"] = entry["figure"] / entry["reference"] if ref else entry["figure"]
    return entry


def compose(plan: Plan, config: dict, m: dict[str, Measurement]) -> dict:
    """m: the Measurements named P1, P1bg, P2, P3 (which P5 shares), P4 and STALL."""
    n, v = plan.repeats, plan.p4_vcpus
    figures = {}
    for q in ("p50", "p99"):
        figures[f"P1_{q}"] = _key(m["P1"], q, q, "s", f"hgm 4 KiB data-page fault {q} as the "
                                  "vCPU saw it, the background held back ÷ ref-fault, 1 thread", n)
        figures[f"P1bg_{q}"] = _key(m["P1bg"], q, q, "s", f"the same {q} with the background "
                                    "pull at full speed ÷ ref-fault, 1 thread, with a concurrent "
                                    "bulk stream", n)
    figures["P2"] = _key(m["P2"], "seconds", "seconds", "s", "hugepage whole-page fault p50 as "
                         "the vCPU saw it ÷ ref-huge (the same data bytes fetched, verified, "
                         "continued)", plan.min_huge_faults)
    figures["P3"] = _key(m["P3"], "bytes_per_s", "bytes_per_s", "B/s", "hgm background pull "
                         "throughput ÷ ref-bulk (the same image: receive, verify, continue)", n)
    figures["P4"] = _key(m["P4"], "faults_per_s", "faults_per_s", "faults/s", f"hgm faults/s, "
                         f"{v} vCPUs, uniform ÷ ref-fault, {v} threads (the same mix of data and "
                         "zero pages)", n)
    figures["P5"] = _key(m["P3"], "P5_percent", None, "%", "destination private memory "
                         "(peak RssAnon) during the pull, % of guest memory", n)
    figures["STALL_RATIO"] = _key(m["STALL"], "ratio", None, "", "default experiment: hgm total "
                                  "vCPU stall ÷ hugepage total", plan.stall_repeats)

    at_ref = stall_ratio_at_ref_fault(m, v)
    backings = _backings(m)
    for key, entry in figures.items():
        entry["backing"] = {mode: (backings.get(mode) or {}).get("backing")
                            for mode in KEY_MODES[key]}
    goals = goals_for(plan.memory)
    values = {k: figures[k].get("value") for k in KEYS}
    return {
        "schema": SCHEMA,
        **values,
        "P5_limit_percent": goals["P5"][1],
        "STALL_RATIO_at_ref_fault": at_ref.get("value"),
        "goals": {k: f"{op} {limit:.3g}" for k, (op, limit) in goals.items()},
        "met": {k: None if values[k] is None else met(goals[k], values[k]) for k in KEYS},
        "refused": {k: f["refused"] for k, f in figures.items() if "refused" in f},
        "config": config,
        "backings": backings,
        "figures": figures,
        "stall_ratio_at_ref_fault": at_ref,
        "raw": {
            "figures": {name: meas.figure for name, meas in m.items()},
            "references": {"ref_fault_1": m["P1"].reference,
                           "ref_fault_1_bulk": m["P1bg"].reference,
                           "ref_huge": m["P2"].reference, "ref_bulk": m["P3"].reference,
                           f"ref_fault_{v}": m["P4"].reference},
            "runs": {name: [r.summary() for r in meas.runs] for name, meas in m.items()},
        },
    }


def stall_ratio_at_ref_fault(m: dict[str, Measurement], threads: int) -> dict:
    """STALL_RATIO had each hgm vCPU stall of a default experiment cost what a fault of
    ref-fault costs at the same concurrency in this run: threads ÷ its faults/s with as many
    threads as the guest has vCPUs (back to back, uniform, the bench image's mix of data and
    zero pages), over that experiment's own hugepage total. An estimate beside the key, not a
    goal and not a bound: it says where the C reference's pace would put the ratio here."""
    entry: dict = {"what": f"each hgm vCPU stall at ref-fault's pace with {threads} threads, "
                           "÷ the experiment's hugepage total (an estimate, not a goal)",
                   "raw": []}
    refs = [r for r in m["P4"].reference if r["faults_per_s"] > 0]
    stalls = [s for s in m["STALL"].figure
              if s["vcpus"] == threads and s["hugepage_stall_seconds"] > 0]
    refused = m["P4"].refused + m["STALL"].refused
    if refused:
        entry["refused"] = "; ".join(dict.fromkeys(refused))
    elif len(refs) < MIN_REFERENCE_RUNS or not stalls:
        entry["refused"] = (f"needs {MIN_REFERENCE_RUNS} runs of ref-fault with {threads} threads "
                            f"(have {len(refs)}) and a default experiment with {threads} vCPUs "
                            f"and a hugepage stall (have {len(stalls)})")
    else:
        per_stall = threads / statistics.median(r["faults_per_s"] for r in refs)
        entry["seconds_per_stall"] = per_stall
        entry["raw"] = [s["hgm_stalls"] * per_stall / s["hugepage_stall_seconds"] for s in stalls]
        entry["value"] = statistics.median(entry["raw"])
    return entry


def _backings(m: dict[str, Measurement]) -> dict:
    """Each mode's backing and its label for people, e.g. "hgm (emulated on shmem)"."""
    out: dict = {}
    for meas in m.values():
        for run in meas.runs:
            if run.migration:
                out.setdefault(run.scenario.mode, run.backing)
        for s in meas.figure:
            for mode, b in s.get("backings", {}).items():
                out.setdefault(mode, b)
    return out

"""What one migration says for a figure, and the samples a figure collects over the rounds.

Each function takes a Run and appends one sample (or, for whole-huge-page faults, one per
fault) to its Measurement, or raises verdict.Refused when the run cannot stand behind a figure:
the migration did not complete verified, the background pull started while the vCPUs still
faulted when it was meant to be held back, or too few faults happened to make a percentile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..quantiles import quantile
from . import faults, floors, verdict
from .scenarios import Run

# Fewer data-page faults than this in one run make no p99.
MIN_FAULTS = 100


@dataclass
class Measurement:
    """One figure's migrations and samples, its reference program's runs, and what went wrong."""

    runs: list[Run] = field(default_factory=list)
    figure: list[dict] = field(default_factory=list)
    reference: list[dict] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def attempt(self, body: Callable[[], None]) -> None:
        """Run body; a refusal or a failed reference program is noted, not raised."""
        try:
            body()
        except verdict.Refused as e:
            self.refused.append(str(e))
        except floors.FloorFailed as e:
            self.refused.append(f"reference program failed: {e}")


def _verified(m: Measurement, run: Run, held_back_s: float | None) -> dict:
    """The guest's result, once the run is known to count. held_back_s: how long the
    background pull was held back, which the vCPUs must not have outrun."""
    m.runs.append(run)
    run.require_verified()
    seconds = run.guest["vcpu_run_seconds"]
    if held_back_s is not None and seconds >= held_back_s:
        raise verdict.Refused(f"{run.label}: the vCPUs ran {seconds:.1f} s, longer than the "
                              f"{held_back_s:g} s the background pull was held back")
    return run.guest


def data_fault_latency(m: Measurement, run: Run, kinds: bytes,
                       held_back_s: float | None) -> None:
    """P1, P1bg: p50 and p99 of the 4 KiB faults on data pages as the vCPU saw them (zero-page
    faults send no request, so they are left out: the reference fetches every page)."""
    guest = _verified(m, run, held_back_s)
    data, zero = faults.data_and_zero(faults.read(run.trace, guest["stall_threshold_ns"]), kinds)
    if len(data) < MIN_FAULTS:
        raise verdict.Refused(f"{run.label}: only {len(data)} data-page faults (fewer than "
                              f"{MIN_FAULTS}): no percentile to speak of")
    latency = sorted(f.latency_ns / 1e9 for f in data)
    m.figure.append({"p50": quantile(latency, 0.5), "p99": quantile(latency, 0.99),
                     "data_faults": len(data), "zero_faults": len(zero),
                     "vcpu_run_seconds": guest["vcpu_run_seconds"]})


def huge_fault_latencies(m: Measurement, run: Run, per_huge: int, held_back_s: float) -> None:
    """P2: each whole-huge-page fault as the vCPU saw it (its first touch of the huge page)."""
    guest = _verified(m, run, held_back_s)
    for f in faults.read(run.trace, guest["stall_threshold_ns"], unit_pages=per_huge):
        m.figure.append({"seconds": f.latency_ns / 1e9, "huge_page": f.page // per_huge,
                         "run": run.label})


def pull_throughput(m: Measurement, run: Run, memory: int) -> None:
    """P3 and P5: the background pull's bytes/s, and the destination's private memory."""
    _verified(m, run, None)
    m.figure.append({"bytes_per_s": run.migration["background_bytes_per_second"],
                     "bytes_background": run.migration["bytes_background"],
                     "dest_peak_rss_anon_bytes": run.dest_peak_rss_anon_bytes,
                     "P5_percent": 100.0 * run.dest_peak_rss_anon_bytes / memory})


def fault_rate(m: Measurement, run: Run, kinds: bytes, held_back_s: float) -> None:
    """P4: faults per second of the vCPUs' run, every kind of page (the reference faults on
    the same image, so on the same mix of data and zero pages)."""
    guest = _verified(m, run, held_back_s)
    found = faults.read(run.trace, guest["stall_threshold_ns"])
    data, zero = faults.data_and_zero(found, kinds)
    m.figure.append({"faults_per_s": len(found) / guest["vcpu_run_seconds"],
                     "faults": len(found), "data_faults": len(data), "zero_faults": len(zero),
                     "vcpu_run_seconds": guest["vcpu_run_seconds"]})


def stall_ratio(m: Measurement, label: str, results: dict, where: str) -> None:
    """STALL_RATIO: one default experiment's hgm total vCPU stall ÷ hugepage's."""
    modes = {x["mode"]: x for x in results["modes"]}
    for mode in ("hgm", "hugepage"):
        if mode not in modes:
            raise verdict.Refused(f"{label} has no {mode} run")
        verdict.require(f"{label} ({mode})",
                        verdict.problems(modes[mode], modes[mode].get("guest_verify")))
    hgm, hugepage = (modes[x]["vcpu_stall_seconds"]["total"] for x in ("hgm", "hugepage"))
    m.figure.append({"ratio": hgm / hugepage if hugepage else float("inf"),
                     "hgm_stall_seconds": hgm, "hugepage_stall_seconds": hugepage,
                     "hgm_stalls": modes["hgm"]["vcpu_stall_seconds"]["count"],
                     "vcpus": results["config"]["vcpus"],
                     "backings": {x: {"backing": modes[x]["backing"],
                                      "backing_label": modes[x]["backing_label"]}
                                  for x in ("hgm", "hugepage")},
                     "results": where})

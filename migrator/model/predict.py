"""From a question (size, vCPUs, pattern, link, policy, mode) and a calibration to a simulated
migration: the Case the simulation runs, and its results in results.json's terms."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from ..protocol import PAGE_SIZE
from . import calibration, sim, workload

GRANULE_4K_MODES = ("hgm", "thp")
TBF_MIN_BURST = 64 << 10  # as netns/shaping.py: the bucket holds ~1 ms, at least this


@dataclass
class Question:
    memory: int
    hugepage_size: int
    vcpus: int
    pattern: str = "zipf"
    accesses: int = 5000
    seed: int = 42
    bandwidth: float | None = None  # bits/s asked for; None: unshaped
    rtt: float = 0.0  # seconds asked for
    measured_bytes_per_second: float | None = None  # the link as measured (validation)
    measured_rtt: float | None = None
    background_cap: float = 0.0
    host_cpus: int | None = None  # default: the calibration host's cores
    trace: str | None = None


def _mix(a: float | None, b: float | None, w: float) -> float:
    a, b = a or 0.0, b or 0.0
    return a + (b - a) * w


def _mode_cal(cal: dict, mode: str) -> tuple[dict, str]:
    if mode in cal["modes"]:
        return cal["modes"][mode], mode
    stand_in = "hgm" if mode in GRANULE_4K_MODES else "hugepage"
    if stand_in not in cal["modes"]:
        stand_in = next(iter(cal["modes"]))
    return cal["modes"][stand_in], stand_in


def link_for(cal: dict, q: Question) -> tuple[sim.Link, float, dict]:
    """The link the model sees, the weight between the calibration's regimes, how it was made."""
    if q.measured_bytes_per_second:
        rate, rtt, how = q.measured_bytes_per_second, q.measured_rtt or cal["rtt_floor"], "measured"
    elif q.bandwidth:
        rate, rtt, how = q.bandwidth / 8 * cal["tbf_efficiency"], max(q.rtt, cal["rtt_floor"]), "asked"
    else:
        rate = cal["regimes"]["busy"]["link_bytes_per_second"]
        rtt, how = max(q.rtt, cal["rtt_floor"]), "unshaped (calibration host)"
    # an unshaped link is the busy regime by definition (the pull runs as fast as the CPUs go)
    w = calibration.weight(cal, rate) if (q.bandwidth or not q.measured_bytes_per_second) else 1.0
    if not q.bandwidth:
        w = 1.0
    bg_c = _mix(cal["regimes"]["idle"]["background_c"], cal["regimes"]["busy"]["background_c"], w)
    burst = max(TBF_MIN_BURST, int(rate / 1000)) if (q.bandwidth or q.measured_bytes_per_second) else 0
    link = sim.Link(rtt=rtt, urgent_rate=rate, background_rate=1 / (1 / rate + bg_c), burst=burst,
                    rate=rate)
    return link, w, {"link_bytes_per_second": rate, "rtt": rtt, "from": how, "weight_busy": w,
                     "background_rate": link.background_rate}


def case_for(cal: dict, q: Question, mode: str, sequences: list[list[int]] | None = None,
             zeros: bytes | None = None) -> sim.Case:
    link, w, _ = link_for(cal, q)
    mc, _ = _mode_cal(cal, mode)
    granule = PAGE_SIZE if mode in GRANULE_4K_MODES else q.hugepage_size
    c_urgent = _mix(mc.get("urgent_c_idle"), mc.get("urgent_c_busy"), w)
    link.urgent_rate = 1 / (1 / link.urgent_rate + c_urgent)
    cost = sim.FaultCost([(qi, _mix(a, b, w)) for (qi, a), (_, b) in
                          zip(mc["cost_idle"], mc["cost_busy"])])
    pages = q.memory // PAGE_SIZE
    if sequences is None:
        sequences = workload.sequences(q.pattern, pages, q.vcpus, q.accesses, q.seed, q.trace)
    return sim.Case(mode=mode, memory=q.memory, granule=granule, vcpus=len(sequences),
                    sequences=sequences, zeros=zeros if zeros is not None else
                    workload.zero_map(pages, q.seed), link=link, cost=cost,
                    host_cpus=q.host_cpus or cal["host"]["cores"],
                    background_cap=q.background_cap,
                    startup=(mc.get("startup") or 0.0), seed=q.seed)


def predict(cal: dict, q: Question, modes: list[str]) -> dict:
    pages = q.memory // PAGE_SIZE
    seqs = workload.sequences(q.pattern, pages, q.vcpus, q.accesses, q.seed, q.trace)
    zeros = workload.zero_map(pages, q.seed)
    _, _, link = link_for(cal, q)
    out = {"question": {**q.__dict__}, "link": link, "modes": []}
    for mode in modes:
        case = case_for(cal, q, mode, seqs, zeros)
        result = sim.simulate(case).as_results(mode)
        result["calibrated_as"] = _mode_cal(cal, mode)[1]
        result["granularity_bytes"] = case.granule
        out["modes"].append(result)
    return out


def fit_startup(cal: dict, runs: list[tuple[Path, dict]]) -> None:
    """Per mode: the median over calibration runs of measured minus modelled migration time."""
    gaps: dict[str, list[float]] = {}
    for _, r in runs:
        q = question_of(r)
        for m in r["modes"]:
            mc, _ = _mode_cal(cal, m["mode"])
            mc["startup"] = 0.0
            modelled = sim.simulate(case_for(cal, q, m["mode"])).migration
            gaps.setdefault(m["mode"], []).append(m["duration_seconds"] - modelled)
    for mode, values in gaps.items():
        cal["modes"][mode]["startup"] = max(0.0, statistics.median(values))


def question_of(results: dict) -> Question:
    """The question a finished run answered, with its link as measured before it ran."""
    from ..guest.trace import load  # noqa: F401  (traces are replayed from their path)

    c = results["config"]
    lk = calibration.link_of(results)
    pattern = str(c["pattern"])
    trace = pattern[len("trace "):] if pattern.startswith("trace ") else None
    return Question(memory=c["memory_bytes"], hugepage_size=c["hugepage_size"], vcpus=c["vcpus"],
                    pattern="uniform" if trace else pattern, accesses=c["accesses_per_vcpu"],
                    seed=c["seed"], bandwidth=lk["requested_bits"],
                    measured_bytes_per_second=lk["bytes_per_second"] if results.get("link") else None,
                    measured_rtt=lk["rtt"] if results.get("link") else None,
                    background_cap=(c.get("background_policy") or {}).get("cap_bytes_per_s", 0),
                    host_cpus=results["host"]["cores"], trace=trace)

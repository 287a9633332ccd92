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
    background_window: int = 2
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


def stream_rate(cal: dict, link: float, w: float, c_idle: float | None,
                c_busy: float | None) -> float:
    """Bytes/s a stream achieves on a link of `link` bytes/s: 1 / (1/link + c), c weighted
    between the regimes; never above the link, nor above what it achieved unshaped (this
    host's CPUs were then its ceiling)."""
    busy_link = cal["regimes"]["busy"]["link_bytes_per_second"]
    ceiling = 1 / (1 / busy_link + (c_busy or 0.0))
    per_byte = 1 / link + _mix(c_idle, c_busy, w)
    return min(link, ceiling, 1 / per_byte if per_byte > 0 else link)


def link_for(cal: dict, q: Question) -> tuple[sim.Link, float, dict]:
    """The link the model sees, the weight between the calibration's regimes, how it was made."""
    if q.measured_bytes_per_second and q.bandwidth:
        rate, rtt, how = q.measured_bytes_per_second, q.measured_rtt or cal["rtt_floor"], "measured"
    elif q.bandwidth:
        rate, rtt, how = q.bandwidth / 8 * cal["tbf_efficiency"], max(q.rtt, cal["rtt_floor"]), "asked"
    else:
        # unshaped: as fast as this host goes, which the calibration measured (a probe of the
        # path in one run is no ceiling for the streams, and varies from run to run)
        # and its RTT the host's floor: one probe before a run reads 17 to 56 us on this
        # very path (the calibration's residuals are taken against the floor as well)
        rate = cal["regimes"]["busy"]["link_bytes_per_second"]
        rtt = max(q.rtt, cal["rtt_floor"])
        how = "unshaped (calibration host)"
    # an unshaped link is the busy regime by definition (the pull runs as fast as the CPUs go)
    w = calibration.weight(cal, rate) if q.bandwidth else 1.0
    regimes = cal["regimes"]
    burst = max(TBF_MIN_BURST, int(rate / 1000)) if q.bandwidth else 0  # tbf's bucket
    queue = calibration.tbf_latency(q.rtt or rtt) if q.bandwidth else 0.0
    link = sim.Link(rtt=rtt, urgent_rate=rate, burst=burst, rate=rate, queue=queue,
                    background_rate=stream_rate(cal, rate, w, regimes["idle"]["background_c"],
                                                regimes["busy"]["background_c"]))
    return link, w, {"link_bytes_per_second": rate, "rtt": rtt, "from": how, "weight_busy": w,
                     "background_rate": link.background_rate}


def _zero_check(cal: dict, w: float) -> float:
    """The zero sweep reads each zero page as verification reads a page: the whole-page
    mode's verify and install cost per byte, where one was calibrated."""
    for mc in cal["modes"].values():
        if mc.get("work_seconds_per_byte_idle") is not None:
            return _mix(mc.get("work_seconds_per_byte_idle"), mc.get("work_seconds_per_byte_busy"), w)
    return 0.0


def case_for(cal: dict, q: Question, mode: str, sequences: list[list[int]] | None = None,
             zeros: bytes | None = None) -> sim.Case:
    link, w, _ = link_for(cal, q)
    mc, _ = _mode_cal(cal, mode)
    granule = PAGE_SIZE if mode in GRANULE_4K_MODES else q.hugepage_size
    if mc.get("urgent_c_idle") is not None:
        link.urgent_rate = stream_rate(cal, link.urgent_rate, w, mc.get("urgent_c_idle"),
                                       mc.get("urgent_c_busy"))
    if not q.bandwidth:
        # unshaped, this host's CPUs are the ceiling, not the path: both streams together move
        # no more than the faster one alone (the probe's single stream is no bound for them)
        link.rate = max(link.urgent_rate, link.background_rate)
    cost = sim.FaultCost([(qi, _mix(a, b, w)) for (qi, a), (_, b) in
                          zip(mc["cost_idle"], mc["cost_busy"])])
    if mc.get("fault_like") in cal["modes"]:  # a 4 KiB fault's cost, plus the granule's work
        base = cal["modes"][mc["fault_like"]]
        work = _mix(mc.get("work_seconds_per_byte_idle"), mc.get("work_seconds_per_byte_busy"), w)
        cost = sim.FaultCost([(qi, _mix(a, b, w)) for (qi, a), (_, b) in
                              zip(base["cost_idle"], base["cost_busy"])])
        cost.per_byte = work
    shares = cal.get("fault_shares") or {}
    cost.before_read, cost.after_reply = shares.get("read", 0.0), shares.get("after", 0.0)
    pages = q.memory // PAGE_SIZE
    if sequences is None:
        sequences = workload.sequences(q.pattern, pages, q.vcpus, q.accesses, q.seed, q.trace)
    return sim.Case(mode=mode, memory=q.memory, granule=granule, vcpus=len(sequences),
                    sequences=sequences, zeros=zeros if zeros is not None else
                    workload.zero_map(pages, q.seed), link=link, cost=cost,
                    host_cpus=q.host_cpus or cal["host"]["cores"],
                    background_cap=q.background_cap, window=q.background_window,
                    zero_check_per_byte=_zero_check(cal, w),
                    startup=_mix(mc.get("startup_idle"), mc.get("startup_busy"), w), seed=q.seed,
                    pull_first=bool(mc.get("pull_first")), vcpu_start=_vcpu_start(cal, w),
                    **_tick(cal))


def _vcpu_start(cal: dict, w: float) -> float | None:
    idle, busy = (cal["regimes"][r].get("vcpu_start") for r in ("idle", "busy"))
    if idle is None or busy is None:
        return None  # a calibration from before it was measured: the model's estimate
    return _mix(idle, busy, w)


def _tick(cal: dict) -> dict:
    tick = cal.get("completion_tick") or {}
    return {"tick_period": tick.get("period", sim.COMPLETION_TICK_S),
            "tick_offset": tick.get("offset", 0.0)}


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
    """Per mode and regime: the median, over calibration runs, of measured minus modelled
    migration time (the model's pull sends its first bytes after it; the faults, which now go
    first, do not wait for it). The median of 5: the typical run, as validation compares."""
    gaps: dict[tuple[str, str], list[float]] = {}
    for mode in cal["modes"].values():
        mode["startup_idle"] = mode["startup_busy"] = 0.0
    for _, r in runs:
        q = question_of(r)
        regime = "idle" if q.bandwidth else "busy"
        for m in r["modes"]:
            modelled = sim.simulate(case_for(cal, q, m["mode"])).migration
            gaps.setdefault((m["mode"], regime), []).append(m["duration_seconds"] - modelled)
    for (mode, regime), values in gaps.items():
        cal["modes"][mode][f"startup_{regime}"] = max(0.0, statistics.median(values))


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
                    background_window=(c.get("background_policy") or {}).get("window", 2),
                    host_cpus=results["host"]["cores"], trace=trace)

"""The model's calibration: what this host's migrations cost, fitted from short local runs.

`migrator model calibrate` runs CALIBRATION (a sweep of its own: another seed and pattern, and
other link settings, than any validation point) and fits, per mode:
- the fault's cost besides its round trip and bytes, as quantiles: each vCPU stall of the
  calibration runs minus the measured path RTT, pooled over the runs of a regime (hgm, thp:
  their 4 KiB faults are that cost);
  for whole huge pages the sum of the fault anatomy's stages other than network and receive
  (fault_stages in results.json, migrator_fault_stage_seconds). Once on the slow shaped link
  ("idle": the host waits on the link) and once unshaped ("busy": the background pull keeps
  the CPUs busy, and 4 vCPU threads share 2 cores); a link in between is weighted by where
  its bandwidth lies between the two, on a log scale;
- the urgent stream's and the background pull's rates as 1 / (1/link + c): c, the CPU's
  seconds per byte, fitted at both links (the median run of each) and weighted the same way;
- when the guest's vCPUs start, from the migration's start (measured: the median of the
  runs' vcpus_started_after_seconds);
- the start-up: the median of what a migration took beyond the model's, on the calibration
  points;
- where a 4 KiB fault's cost falls (before its read, after its reply: the fault anatomy), and
  whether the pull's first window leaves before the first fault (whole huge pages);
- the destination's completion check: once the pull is done its watch looks every
  FINISH_POLL_S (1 ms), so a migration's measured time is the last granule's install rounded
  up to that (plus bookkeeping), fitted as ticks of it.
The link's own RTT floor and the tbf's efficiency (measured / asked) come from the runs' link
measurements. The file holds the host's description (kernel, cores, pools).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

from ..errors import MigratorError
from ..protocol import PAGE_SIZE
from ..report.samples import read_samples


def tbf_latency(rtt: float) -> float:
    """The time a shaped link's queue holds: netns/shaping.py's tbf latency, max(5 ms, RTT)."""
    return max(5e-3, rtt)

SCHEMA = "migrator/model-calibration/1"
QUANTILES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 1.0)
MIN_COST = 5e-6
QUEUED_FRACTION = 0.8  # a residual this close to the shaper's queue time waited behind it
CALIBRATION = {  # a sweep spec (migrator/sweep/spec.py); never a validation point
    "name": "calibration", "modes": ["hgm", "hugepage"], "seed": 7, "repetitions": 5,
    "grid": {"link": ["500mbit/1ms", "unshaped"], "memory": ["128MiB"], "hugepage_size": ["2M"],
             "vcpus": [4], "pattern": ["hotset"], "accesses": [2000]},
}


def _quantiles(values: list[float]) -> list[list[float]]:
    v = sorted(max(MIN_COST, x) for x in values)
    if not v:
        return [[0.0, MIN_COST], [1.0, MIN_COST]]
    return [[q, v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]] for q in QUANTILES]


def _median_quantiles(each: list[list[list[float]]]) -> list[list[float]]:
    """Quantile by quantile, the median of several runs' [q, value] lists (alike in their q)."""
    return [[q, statistics.median(e[i][1] for e in each)] for i, (q, _) in enumerate(each[0])]


def _median_run(runs: list[list[float]]) -> list[list[float]]:
    """Quantiles of a typical run's costs: each quantile the median of the runs' own (as the
    rates and the start-up: this host's runs come fast or slow by a third, and pooling them
    put a slow run's tail into every prediction)."""
    each = [_quantiles(r) for r in runs if r]
    return _median_quantiles(each) if each else _quantiles([])


def _stage_cost(stages: dict) -> list[list[float]]:
    """Whole-huge-page faults: the stages besides network and receive, quantile by quantile."""
    names = ("queue", "request", "verify", "install", "wake")
    if not stages or "queue" not in stages:
        return [[0.0, MIN_COST], [1.0, MIN_COST]]
    points = {0.0: "p50", 0.5: "p50", 0.9: "p90", 0.99: "p99", 1.0: "p99"}
    return [[q, max(MIN_COST, sum((stages[n] or {}).get(k) or 0.0 for n in names))]
            for q, k in points.items()]


def link_of(results: dict) -> dict:
    """The path as measured before the run: RTT p50 and throughput, bytes/s."""
    m = (results.get("link") or {}).get("measured") or {}
    rtt = (m.get("rtt_seconds") or {}).get("p50") or 30e-6  # loopback: one host
    bits = m.get("throughput_bits_per_second") or 20e9
    return {"rtt": rtt, "bytes_per_second": bits / 8,
            "requested_bits": ((results.get("link") or {}).get("requested") or {})
            .get("bandwidth_bits_per_second")}


def _c(achieved: float, link: float) -> float:
    """CPU seconds per byte beyond the link's: negative when a stream beat the link probe's
    single stream (unshaped, the probe is not the ceiling); 1/link + c stays positive."""
    return 1 / achieved - 1 / link if achieved > 0 else 0.0


def _fit_c(pairs: list[tuple[float, float]], regime: dict) -> float:
    """c from (achieved bytes/s, link bytes/s) of a regime's runs: the median achieved rate on
    the regime's median link (a run's own link probe is noisy, and unshaped no ceiling). The
    model predicts the typical run, as validation compares it with the median of repetitions:
    the fastest run once set it, and unshaped predictions came out 20-50 % short."""
    if not pairs:
        return 0.0
    return _c(statistics.median(a for a, _ in pairs), regime["link_bytes_per_second"])


def fit(runs: list[tuple[Path, dict]]) -> dict:
    """Fit from calibration runs (path, results.json): one shaped, one unshaped."""
    by_regime: dict[str, list[tuple[Path, dict]]] = {"idle": [], "busy": []}
    for path, r in runs:
        regime = "idle" if link_of(r)["requested_bits"] else "busy"
        by_regime[regime].append((path, r))
    if not by_regime["idle"] or not by_regime["busy"]:
        raise MigratorError("the calibration needs a shaped and an unshaped two-host run")
    out: dict = {"schema": SCHEMA, "modes": {}, "regimes": {}}
    for regime, items in by_regime.items():
        links = [link_of(r) for _, r in items]
        out["regimes"][regime] = {"link_bytes_per_second": statistics.median(
            lk["bytes_per_second"] for lk in links),
            "rtt": statistics.median(lk["rtt"] for lk in links)}
    shaped = [link_of(r) for _, r in by_regime["idle"]]
    out["tbf_efficiency"] = statistics.median(lk["bytes_per_second"] * 8 / lk["requested_bits"]
                                              for lk in shaped)
    out["rtt_floor"] = out["regimes"]["busy"]["rtt"]
    modes = sorted({m["mode"] for _, r in runs for m in r["modes"]})
    bg_c: dict[str, list[float]] = {"idle": [], "busy": []}
    for mode in modes:
        fitted: dict = {}
        for regime, items in by_regime.items():
            costs, c_urgent, work, residuals = [], [], [], []
            for path, r in items:
                lk = link_of(r)
                m = next((x for x in r["modes"] if x["mode"] == mode), None)
                if m is None:
                    continue
                if m.get("granularity_bytes", 4096) == 4096:
                    stalls = read_samples(path, mode).get("vcpu_stall_seconds") or []
                    # unshaped, against the regime's RTT (the host's floor), as predict.py
                    # adds it back: one run's probe of a loopback path is noise (17-56 us)
                    rtt = lk["rtt"] if lk["requested_bits"] else out["regimes"][regime]["rtt"]
                    residual = [s - rtt for s in stalls]
                    if lk["requested_bits"]:
                        # a fault that waited behind the shaper's queue is the model's own
                        # (sim.py): not part of a fault's cost
                        queue = tbf_latency(lk["rtt"])
                        residual = [x for x in residual if x < QUEUED_FRACTION * queue]
                    residuals.append(residual)
                else:
                    stages = m.get("fault_stages") or {}
                    costs.append(_stage_cost(stages))
                    granule_bytes = m["bytes_urgent"] / max(1, m["faults"])
                    if stages.get("verify") and granule_bytes:
                        work.append(sum((stages[n] or {}).get("p50") or 0.0
                                        for n in ("verify", "install")) / granule_bytes)
                    if m["vcpu_run_seconds"] > 0:
                        # the stream is busy throughout the vCPUs' run: shaped, the link is the
                        # limit; unshaped, the vCPUs spend most of their run waiting on it
                        # (stall total / (vCPUs x run) is 0.85-0.95 here), so the run's bytes
                        # over its time is the stream's service rate, its per-reply work (the
                        # source's read and send, between replies) included. A reply's first
                        # to last byte (the receive stage) leaves that out: 3.5 GB/s against
                        # 2.5 GB/s, and faults queued a third too briefly.
                        c_urgent.append((m["bytes_urgent"] / m["vcpu_run_seconds"],
                                         lk["bytes_per_second"]))
                # the pull once the vCPUs are done (it stands back for their faults before)
                after = m["duration_seconds"] - m["vcpu_run_seconds"]
                if m.get("granularity_bytes", 4096) == 4096 and after > 0.02:
                    bg_c[regime].append((m["bytes_background"] / after, lk["bytes_per_second"]))
            if residuals:
                fitted[f"cost_{regime}"] = _median_run(residuals)
            elif costs:
                fitted[f"cost_{regime}"] = _median_quantiles(costs)
            fitted[f"urgent_c_{regime}"] = _fit_c(c_urgent, out["regimes"][regime]) if c_urgent else None
            if work:
                fitted[f"work_seconds_per_byte_{regime}"] = statistics.median(work)
        out["modes"][mode] = fitted
    four_k = [m for m in modes if "work_seconds_per_byte_idle" not in out["modes"][m]]
    for mode in modes:
        if "work_seconds_per_byte_idle" in out["modes"][mode] and four_k:
            # a whole-page fault is a 4 KiB fault's machinery plus the granule's verify and
            # install; its queueing behind other faults is the model's own (the stages'
            # queue and network include it, so they are not its cost)
            out["modes"][mode]["fault_like"] = "hgm" if "hgm" in four_k else four_k[0]
    for mode in modes:
        out["modes"][mode]["pull_first"] = fit_pull_first(
            [m for _, r in runs for m in r["modes"] if m["mode"] == mode],
            [r["config"] for _, r in runs for m in r["modes"] if m["mode"] == mode])
    out["fault_shares"] = fit_fault_shares([m for _, r in runs for m in r["modes"]
                                            if m.get("granularity_bytes", 4096) == 4096])
    from ..dest.migration import FINISH_POLL_S

    out["completion_tick"] = fit_completion_tick(
        [m["duration_seconds"] for _, r in runs for m in r["modes"]], FINISH_POLL_S)
    for regime, items in by_regime.items():
        out["regimes"][regime]["background_c"] = _fit_c(bg_c[regime], out["regimes"][regime])
        out["regimes"][regime]["vcpu_start"] = fit_vcpu_start(
            [m for _, r in items for m in r["modes"]])
    return out


def fit_vcpu_start(modes: list[dict]) -> float | None:
    """When the guest's vCPUs start touching memory, from the migration's start: the median of
    the runs' `vcpus_started_after_seconds` (the guest starts its threads on the destination's
    answer: 6 to 60 ms on this VM, with the guest's size and the host's load). None: runs from
    before it was measured."""
    starts = [m["vcpus_started_after_seconds"] for m in modes
              if m.get("vcpus_started_after_seconds") is not None]
    return statistics.median(starts) if starts else None


def first_window_bytes(config: dict, granularity: int) -> int:
    """The data bytes of the pull's first window: its `window` jobs of a chunk each (at least a
    granule), claimed from granule 0 of the image."""
    from ..model import workload

    policy = config.get("background_policy") or {}
    pages = config["memory_bytes"] // PAGE_SIZE
    per_job = max(1, (policy.get("chunk_bytes") or 4 << 20) // granularity)
    data = workload.data_pages_per_granule(workload.zero_map(pages, config["seed"]), pages,
                                           granularity // PAGE_SIZE)
    first = per_job * (policy.get("window") or 2)
    return sum(data[g % len(data)] for g in range(min(first, pages * PAGE_SIZE // granularity))) * PAGE_SIZE


def fit_pull_first(modes: list[dict], configs: list[dict]) -> bool:
    """Whether the pull's first window leaves before the vCPUs' first fault is read. The pull
    starts with the migration, its zero sweep first; the vCPUs start on the guest's hand-over
    answer. With whole huge pages the sweep has next to nothing to check and the pull wins
    (its first window's bytes travel in the background); with 4 KiB granules the sweep checks
    every zero page and the first faults come first (none waits on the pull). Measured: most
    calibration runs of the mode say so: in results.json's `background_first` (the data plane
    compares its first request for data with the first fault read), or in runs from before it,
    by the first window's bytes in the background (whole pages) or the faults' waits on the
    pull (a 4 KiB mode's whole pull is background)."""
    votes = []
    for m, c in zip(modes, configs):
        g = m.get("granularity_bytes", PAGE_SIZE)
        if m.get("background_first") is not None:  # measured by the data plane
            votes.append(bool(m["background_first"]))
        elif g == PAGE_SIZE:
            votes.append(m.get("faults_waited_on_background", 0) > 0.05 * max(1, m["faults"]))
        else:
            votes.append(m["bytes_background"] >= first_window_bytes(c, g))
    return bool(votes) and sum(votes) > len(votes) / 2


def fit_fault_shares(modes: list[dict]) -> dict:
    """Where a 4 KiB fault's cost falls, in seconds, from the median fault's anatomy: before
    the fault loop reads it (queue) and after the reply's last byte (verify, install, wake).
    The pull stands back from the read until the last byte (the C loop's in_flight), so these
    bound the moments it may step in between faults. A cost's tail (waits on the link, on a
    CPU) is left between the read and the reply, where the shaped runs' long stalls wait."""
    read, after = [], []
    for m in modes:
        f = (m.get("fault_stages") or {}).get("median_fault") or {}
        if f.get("queue") is not None:
            read.append(f["queue"])
            after.append(sum(f.get(k) or 0.0 for k in ("verify", "install", "wake")))
    if not read:
        return {"read": 0.0, "after": 0.0}
    return {"read": statistics.median(read), "after": statistics.median(after)}


def fit_completion_tick(durations: list[float], tick: float) -> dict:
    """The destination declares a migration complete at a tick of its watch: the watch waits
    `tick`, brings the metrics up to date, then checks, so its k-th check comes at
    offset + k * period (period a little over `tick`: the bookkeeping). Fitted by least
    squares to the calibration runs' durations, k = floor(duration / tick) (the bookkeeping
    is well under a tick)."""
    ks = [max(1, math.floor(d / tick)) for d in durations]
    if len(set(ks)) < 2:  # one tick count: the period cannot be told from the offset
        return {"period": tick, "offset": max(0.0, statistics.median(
            d - k * tick for d, k in zip(durations, ks)))}
    mk, md = statistics.fmean(ks), statistics.fmean(durations)
    period = (sum((k - mk) * (d - md) for k, d in zip(ks, durations)) /
              sum((k - mk) ** 2 for k in ks))
    period = min(max(period, tick), 1.5 * tick)
    return {"period": period, "offset": max(0.0, md - period * mk)}


def weight(cal: dict, link_bytes_per_second: float) -> float:
    """0 at the idle (shaped) calibration link's bandwidth or below, 1 at the unshaped one's."""
    lo = cal["regimes"]["idle"]["link_bytes_per_second"]
    hi = cal["regimes"]["busy"]["link_bytes_per_second"]
    if hi <= lo:
        return 1.0
    x = (math.log(max(link_bytes_per_second, 1)) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return min(1.0, max(0.0, x))


def save(cal: dict, path: Path, host: dict, runs: list[str]) -> Path:
    body = {**cal, "host": host, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "calibration_spec": CALIBRATION, "runs": runs}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2) + "\n")
    return path


def load(path: Path) -> dict:
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise MigratorError(f"cannot read the calibration {path}: {e}; run `migrator model "
                            f"calibrate` first") from None
    if body.get("schema") != SCHEMA:
        raise MigratorError(f"{path}: not a model calibration (schema {SCHEMA})")
    return body

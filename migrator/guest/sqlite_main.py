"""The SQLite guest: its vCPUs query the database that is its memory while the memory migrates,
go on for a while once it has all arrived, then measure their query rate; and the same without
a migration (run_baseline), all memory local on the largest pages the host gives.
"""

from __future__ import annotations

import threading
import time

from ..errors import MigratorError
from ..protocol import PAGE_SIZE
from ..quantiles import summarize
from . import rate, sqlite, trace, vcpu
from .local import LocalMemory
from .main import AFTER_LOADS, MAX_STALL_SAMPLES, listen_for_verdict, verify
from .memory import GuestMemory
from .session import DestinationSession

MAX_ANSWERS = 3000  # answers sent back per run, for a check against a local copy


def _describe(runs: list[sqlite.QueryRun], workload: sqlite.Workload, split_ns: int | None,
              seconds: float) -> dict:
    errors = [r.error for r in runs if r.error]
    answers = [[k, p, n, a] for r in runs
               for k, p, n, a in zip(r.kind, r.param, r.rows, r.answer)]
    step = max(1, len(answers) // MAX_ANSWERS)
    return {"name": "sqlite", "mix": dict(zip(sqlite.KINDS, workload.mix)),
            "rate_per_vcpu": workload.rate, "vcpus": len(runs), "run_seconds": seconds,
            **sqlite.latency_summary(runs, split_ns),
            "capped": any(r.capped for r in runs), "errors": errors,
            # [kind, parameter, rows, checksum] of every step-th query, every kind among them
            "answers": answers[::step][:MAX_ANSWERS]}


def _stalls(runs: list[sqlite.QueryRun]) -> tuple[list[int], list[dict]]:
    """Off-CPU time of each query that waited (as the touch loop's stalls: above the threshold):
    what a SQLite guest can see of its faults, which it cannot time one by one."""
    per_vcpu, samples = [], []
    for r in runs:
        mine = [t for t in r.off_cpu_ns() if t >= vcpu.STALL_THRESHOLD_NS]
        samples += mine
        per_vcpu.append({"vcpu": r.vcpu, "accesses": len(r.kind),
                         **summarize(t / 1e9 for t in mine), "sigbus": 0})
    return samples, per_vcpu


def run_sqlite_guest(socket_path: str, vcpus: int, workload: sqlite.Workload, after: float,
                     completion_timeout: float = 600.0, record: str | None = None) -> dict:
    dest = DestinationSession(socket_path, vcpus)
    layout = dest.layout
    memory = GuestMemory(layout["size"], layout["memory_page_size"], layout.get("thp_folio", 0))
    stuck = False
    try:
        dest.hand_over(memory)
        started = time.monotonic()
        verdict, heard = listen_for_verdict(dest, completion_timeout)
        stop = sqlite.new_stop()
        runs: list[sqlite.QueryRun] = []
        vcpu_threads = threading.Thread(
            target=lambda: runs.extend(sqlite.run_vcpus(
                memory.view.address, layout["size"], vcpus, workload, stop,
                dest.announce_vcpus, record=bool(record))), daemon=True)
        vcpu_threads.start()
        heard.wait()
        complete_ns = time.monotonic_ns()
        if verdict.get("phase") != "complete":
            stop[0] = 1
            vcpu_threads.join(5.0)
            if vcpu_threads.is_alive():
                stuck = True  # blocked on faults: their memory must stay mapped under them
                return {"session": dest.session, "mode": layout["mode"],
                        "backing": layout["backing"], "backing_label": layout["backing_label"],
                        "vcpus_blocked": True,
                        "migration": {k: v for k, v in verdict.items() if k != "type"}}
        else:
            time.sleep(after)  # the workload's own length after the migration, not a wait on it
            stop[0] = 1
            vcpu_threads.join()
        seconds = time.monotonic() - started
        samples, per_vcpu = _stalls(runs)
        result = {
            "session": dest.session, "mode": layout["mode"], "backing": layout["backing"],
            "backing_label": layout["backing_label"], "pattern": "sqlite", "vcpus": len(runs),
            "accesses_per_vcpu": max((len(r.kind) for r in runs), default=0),
            "write_ratio": 0.0, "seed": workload.seed, "vcpu_run_seconds": seconds,
            "stall_threshold_ns": vcpu.STALL_THRESHOLD_NS, "stall_measure": "off-CPU time per query",
            "vcpu_stall_seconds": summarize(t / 1e9 for t in samples), "per_vcpu": per_vcpu,
            "sigbus": {"hits": 0, "pages": 0, "offsets": []},
            "workload": _describe(runs, workload, complete_ns, seconds),
        }
        pages = layout["size"] // PAGE_SIZE
        if record:
            trace.save(record, pages, [trace.Recorded(r.pages or []) for r in runs])
        dest.send({"type": "stalls", "threshold_ns": vcpu.STALL_THRESHOLD_NS, "vcpus": per_vcpu,
                   "samples_ns": samples[:MAX_STALL_SAMPLES], "events": [], "sigbus": 0})
        result["migration"] = {k: v for k, v in verdict.items() if k not in ("type", "guest")}
        if verdict.get("phase") == "complete":
            result["verify"] = verify(dest, memory, {}, pages,
                                      verdict.get("poison", {}).get("ranges", []))
            dest.send({"type": "verify", **result["verify"]})
            # no rate over poisoned memory (a machine check), nor of queries that cannot run
            if not verdict.get("poison", {}).get("ranges") and not result["workload"]["errors"]:
                result["after_migration"] = sqlite.query_rate(memory.view.address,
                                                               layout["size"], workload, after)
        return result
    finally:
        dest.close()
        if not stuck:
            memory.close()


def run_baseline(image: str | None, size: int, vcpus: int, workload: sqlite.Workload | None,
                 seconds: float | None, seed: int) -> dict:
    """All memory local from the start, on the largest pages available: with a workload, its
    query latency open loop for `seconds` (default 2), then its query rate; without, the access
    rate (rounds for `seconds`, as after a migration; default 5 rounds)."""
    memory = LocalMemory(size, image)
    try:
        out: dict = {"size": size}
        if workload is None:
            out["after_migration"] = rate.access_rate(memory.view, AFTER_LOADS, seed,
                                                      seconds=seconds, size=size)
            out["mapping"] = memory.mapping()  # as measured: smaps counts what was touched
            return out
        seconds = seconds or 2.0
        stop = sqlite.new_stop()
        timer = threading.Timer(seconds, lambda: stop.__setitem__(0, 1))
        started = time.monotonic()
        timer.start()
        runs = sqlite.run_vcpus(memory.view.address, size, vcpus, workload, stop)
        timer.join()
        out["workload"] = _describe(runs, workload, None, time.monotonic() - started)
        if out["workload"]["errors"]:
            raise MigratorError("; ".join(out["workload"]["errors"]))
        out["after_migration"] = sqlite.query_rate(memory.view.address, size, workload, seconds)
        out["mapping"] = memory.mapping()
        return out
    finally:
        memory.close()

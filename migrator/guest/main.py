"""The guest process: connect to the destination, hand over memory, run vCPUs, check results."""

from __future__ import annotations

import struct
import threading
import time

from ..errors import MigratorError
from ..protocol import PAGE_SIZE
from ..protocol.digest import mismatches
from ..protocol.guest import MAX_DIGEST_RANGE
from ..quantiles import summarize
from . import rate, trace, vcpu
from .memory import GuestMemory
from .session import DestinationSession

MAX_STALL_SAMPLES = 200_000
MAX_STALL_EVENTS = 100_000  # (page, start, stall): the fault anatomy's guest side
AFTER_LOADS = 2_000_000  # random loads per round of the after-migration access rate


def run_guest(socket_path: str, vcpus: int, pattern: str, accesses: int, write_ratio: float,
              seed: int, completion_timeout: float = 600.0, record: str | None = None,
              replay: str | None = None, after: float | None = None) -> dict:
    dest = DestinationSession(socket_path, vcpus)
    layout = dest.layout
    memory = GuestMemory(layout["size"], layout["memory_page_size"], layout.get("thp_folio", 0))
    stuck = False
    try:
        # Plan the vCPUs' accesses before switchover: once the destination is ready, memory
        # is migrating and the vCPUs must already be running.
        pages = layout["size"] // PAGE_SIZE
        runs = vcpu.plan(memory.view.address, pages, vcpus, pattern, accesses, write_ratio, seed,
                         trace.load(replay, pages) if replay else None)
        dest.hand_over(memory)
        started = time.monotonic()
        verdict, heard = listen_for_verdict(dest, completion_timeout)
        vcpus = threading.Thread(target=vcpu.run_all, args=(runs, dest.announce_vcpus),
                                 daemon=True)
        vcpus.start()
        while vcpus.is_alive():
            vcpus.join(0.1)
            if heard.is_set() and verdict.get("phase") != "complete" and vcpus.is_alive():
                stuck = True  # their memory must stay mapped under them until we exit
                return {"session": dest.session, "mode": layout["mode"],
                        "backing": layout["backing"], "backing_label": layout["backing_label"],
                        "vcpus_blocked": True,
                        "migration": {k: v for k, v in verdict.items() if k not in ("type", "guest")}}
        vcpu_seconds = time.monotonic() - started
        stalls = [t for r in runs for t in r.stalls_ns()]
        if record:
            trace.save(record, pages, runs)
        result = {
            "session": dest.session, "mode": layout["mode"],
            "backing": layout["backing"], "backing_label": layout["backing_label"],
            "pattern": f"trace {replay}" if replay else pattern, "vcpus": len(runs),
            "accesses_per_vcpu": len(runs[0].pages),
            "write_ratio": write_ratio, "seed": seed, "vcpu_run_seconds": vcpu_seconds,
            "stall_threshold_ns": vcpu.STALL_THRESHOLD_NS,
            "vcpu_stall_seconds": summarize(t / 1e9 for t in stalls),
            "per_vcpu": [r.summary() for r in runs],
            "sigbus": _sigbus_summary(runs, memory.view.address),
        }
        dest.send({"type": "stalls", "threshold_ns": vcpu.STALL_THRESHOLD_NS,
                   "vcpus": result["per_vcpu"], "samples_ns": stalls[:MAX_STALL_SAMPLES],
                   "events": [e for r in runs for e in r.stall_events()][:MAX_STALL_EVENTS],
                   "sigbus": result["sigbus"]["hits"]})
        if not heard.wait(completion_timeout) or "phase" not in verdict:
            raise MigratorError(f"no verdict from the destination on the migration: "
                                f"{verdict.get('error', f'nothing within {completion_timeout:.0f}s')}")
        complete = verdict
        result["migration"] = {k: v for k, v in complete.items() if k not in ("type", "guest")}
        if complete.get("phase") == "complete":
            poisoned = complete.get("poison", {}).get("ranges", [])
            result["verify"] = verify(dest, memory, vcpu.expected_writes(runs), pages, poisoned)
            dest.send({"type": "verify", **result["verify"]})
            if not poisoned:  # a load of poisoned memory would be a machine check
                result["after_migration"] = rate.access_rate(memory.view, AFTER_LOADS, seed,
                                                                  seconds=after)
        return result
    finally:
        dest.close()
        if not stuck:
            memory.close()


def listen_for_verdict(dest: DestinationSession, timeout: float
                       ) -> tuple[dict, threading.Event]:
    """The destination's verdict on the migration, filled in by a thread; the event is set once
    it came (or the wait failed: then verdict holds 'error').

    The verdict can come while vCPUs still run: if the migration fails, they are blocked on
    faults nobody will resolve, and the guest is lost.
    """
    verdict: dict = {}
    heard = threading.Event()

    def listen() -> None:
        try:
            verdict.update(dest.wait_complete(timeout))
        except Exception as e:  # reported by the caller, from its thread
            verdict["error"] = f"{type(e).__name__}: {e}"
        heard.set()

    threading.Thread(target=listen, daemon=True).start()
    return verdict, heard


def _sigbus_summary(runs: list[vcpu.VcpuRun], base: int) -> dict:
    hits = [h for r in runs for h in r.sigbus or ()]
    return {"hits": len(hits), "pages": len({(h.address - base) // PAGE_SIZE for h in hits}),
            "offsets": sorted({h.address - base for h in hits})[:100]}


def _in_ranges(offset: int, ranges: list[list[int]]) -> bool:
    return any(start <= offset < start + length for start, length in ranges)


def _readable_runs(pages: int, poisoned: list[list[int]]) -> list[tuple[int, int]]:
    """[first, end) page runs outside the poisoned byte ranges."""
    runs, at = [], 0
    for start, length in sorted(poisoned):
        first = start // PAGE_SIZE
        if first > at:
            runs.append((at, first))
        at = max(at, -(-(start + length) // PAGE_SIZE))
    if at < pages:
        runs.append((at, pages))
    return runs


def verify(dest: DestinationSession, memory: GuestMemory, expected: dict[int, int], pages: int,
           poisoned: list[list[int]] = ()) -> dict:
    """Check all of our memory at the end: every page we did not write against the manifest's
    digest (asked of the destination in ranges), every word we wrote.

    Poisoned memory (ranges from the destination) is left out: reading it would be a machine
    check. Writes into memory poisoned afterwards are lost, and counted as such.
    """
    began = time.monotonic()
    base = memory.view.address
    written_pages = {(a - base) // PAGE_SIZE for a in expected}
    view = memory.view.view
    mismatched: list[int] = []
    checked = 0
    for first, end in _readable_runs(pages, poisoned):
        for lo in range(first, end, MAX_DIGEST_RANGE):
            hi = min(end, lo + MAX_DIGEST_RANGE)
            want = dest.digest_range(lo, hi - lo)
            bad = mismatches(view[lo * PAGE_SIZE:hi * PAGE_SIZE], want, 0)
            mismatched += [lo + i for i in bad if lo + i not in written_pages]
            checked += hi - lo - sum(1 for p in written_pages if lo <= p < hi)
    poisoned_writes = [a for a in expected if _in_ranges(a - base, poisoned)]
    lost = [a for a, value in expected.items() if not _in_ranges(a - base, poisoned)
            and struct.unpack_from("<Q", view, a - base)[0] != value]
    return {"pages_checked": checked, "pages_written": len(written_pages),
            "pages_poisoned": pages - sum(e - f for f, e in _readable_runs(pages, poisoned)),
            "mismatched_pages": len(mismatched), "first_mismatched": mismatched[:10],
            "writes_checked": len(expected) - len(poisoned_writes), "writes_lost": len(lost),
            "writes_lost_to_poison": len(poisoned_writes),
            "seconds": time.monotonic() - began}

"""vCPU threads: each runs the C touch loop (GIL released, touch.py) over its access sequence."""

from __future__ import annotations

import threading
from array import array
from dataclasses import dataclass
from typing import Callable

from ..protocol import PAGE_SIZE
from ..quantiles import summarize
from . import patterns
from .touch import SigbusHit, touch

# An access slower than this waited for something (a fault); a resident access takes ~100 ns.
STALL_THRESHOLD_NS = 5_000


@dataclass
class VcpuRun:
    vcpu: int
    pages: list[int]
    writes: bytes
    addresses: array
    values: array
    latency_ns: array | None = None
    start_ns: array | None = None  # CLOCK_MONOTONIC when each access started
    sigbus: list[SigbusHit] | None = None  # accesses that touched poisoned memory

    def stalls_ns(self) -> list[int]:
        """Slow accesses; a touch of poisoned memory is a machine check, not a stall."""
        failed = {h.index for h in self.sigbus or ()}
        return [t for i, t in enumerate(self.latency_ns)
                if t >= STALL_THRESHOLD_NS and i not in failed]

    def stall_events(self) -> list[tuple[int, int, int]]:
        """(page, CLOCK_MONOTONIC start ns, stall ns) of each stall, for the destination to
        line up with its own stamps of the fetch that ended it."""
        failed = {h.index for h in self.sigbus or ()}
        return [(p, s, t) for i, (p, s, t) in enumerate(zip(self.pages, self.start_ns,
                                                             self.latency_ns))
                if t >= STALL_THRESHOLD_NS and i not in failed]

    def summary(self) -> dict:
        stalls = self.stalls_ns()
        s = summarize(t / 1e9 for t in stalls)
        return {"vcpu": self.vcpu, "accesses": len(self.pages), **s,
                "sigbus": len(self.sigbus or ())}


def plan(base: int, pages: int, vcpus: int, pattern: str, accesses: int, write_ratio: float,
         seed: int, replay: list | None = None) -> list[VcpuRun]:
    """Each vCPU's accesses: from the pattern, or replayed from a trace (one vCPU per
    recorded vCPU; accesses and write ratio then come from the trace)."""
    runs = []
    for v in range(len(replay) if replay else vcpus):
        if replay:
            page_list, writes = replay[v].pages, replay[v].writes
            accesses = len(page_list)
        else:
            page_list = patterns.pages_for(pattern, pages, v, vcpus, accesses, seed)
            writes = patterns.writes_for(v, accesses, write_ratio, seed)
        offsets = patterns.read_offsets(v, accesses, seed)
        # Writes go to the vCPU's own 8-byte slot of the page, so vCPUs never overwrite each
        # other and the last value written per (vCPU, page) is known.
        addresses = array("Q", (base + p * PAGE_SIZE + (8 * v if w else off)
                                for p, w, off in zip(page_list, writes, offsets)))
        values = array("Q", (((v + 1) << 48) | (i + 1) for i in range(accesses)))
        runs.append(VcpuRun(v, page_list, writes, addresses, values))
    return runs


def run_all(runs: list[VcpuRun], announce: Callable[[list[int]], None] | None = None) -> None:
    """Run every vCPU to the end of its accesses. announce(thread ids) is called once all vCPU
    threads exist and before any touches memory, so faults can be told apart by thread."""
    def body(v: int) -> None:
        r = runs[v]
        # A VMM turns SIGBUS on poisoned memory into a machine check for the guest and goes on.
        done = touch(r.addresses, r.writes, r.values, catch_sigbus=True)
        r.latency_ns, r.start_ns, r.sigbus = done.latency_ns, done.start_ns, done.sigbus

    run_threads(len(runs), body, announce)


def run_threads(count: int, body: Callable[[int], None],
                announce: Callable[[list[int]], None] | None = None) -> None:
    """body(v) in vCPU threads v = 0..count-1, to their end. announce(thread ids) is called once
    all the threads exist and before any body starts."""
    ready = threading.Barrier(count + 1)
    tids = [0] * count

    def thread(v: int) -> None:
        tids[v] = threading.get_native_id()
        ready.wait()
        body(v)

    # daemon: a vCPU blocked on a fault nobody will resolve must not keep the process alive
    threads = [threading.Thread(target=thread, args=(v,), name=f"vcpu{v}", daemon=True)
               for v in range(count)]
    for t in threads:
        t.start()
    try:
        ready.wait()
        if announce:
            announce(tids)
    finally:
        for t in threads:
            t.join()


def expected_writes(runs: list[VcpuRun]) -> dict[int, int]:
    """address -> the last value this guest wrote there (writes that got SIGBUS never happened)."""
    last: dict[int, int] = {}
    for r in runs:
        failed = {h.index for h in r.sigbus or ()}
        for i, w in enumerate(r.writes):
            if w and i not in failed:
                last[r.addresses[i]] = r.values[i]
    return last

"""The discrete-event model of one postcopy migration (SimPy), for one mode.

Processes:
- one per vCPU: walks its access sequence; an access to a granule that is present costs
  ACCESS_SECONDS (runs of them are one timeout: pages are aggregated into runs between faults);
  an access to an absent granule is a fault, or a wait on the fault or background chunk that
  already carries it;
- one per urgent fetch: the fault's overhead (queue, request, verify, install, wake: from the
  calibration), one round trip, and the granule's data bytes on the urgent stream, which
  replies in order (a FIFO resource: faults queue behind each other's transfers);
- the background pull: after the zero granules (mapped without the network, at start) it
  walks the memory in steps (a chunk, or 1/BG_STEPS of the memory when that is larger),
  skipping what faults fetched; each step's bytes at the background rate, plus the urgent
  bytes that crossed the link meanwhile. It stands back while a fault is in flight or came
  less than STAND_BACK_SECONDS ago when the guest's vCPUs fill the host's CPUs, as the
  destination does (dest/dataplane.py).

The pull starts after the calibrated start-up time (its connection, the zero sweep); the
migration ends when the last granule is present.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass, field

import simpy

from ..protocol import PAGE_SIZE
from ..quantiles import summarize
from . import workload

ACCESS_SECONDS = 1e-7  # a resident access, as the guest's touch loop measures one
STALL_THRESHOLD = 5e-6  # the guest's: slower accesses are stalls
STAND_BACK_SECONDS = 0.5e-3
BG_STEPS = 4000


@dataclass
class Link:
    rtt: float  # seconds, the path's (at least the host's floor)
    urgent_rate: float  # bytes/s the urgent stream achieves
    background_rate: float  # bytes/s the background pull achieves
    burst: int = 0  # bytes a reply may take from a full token bucket without waiting
    rate: float = 0.0  # bytes/s of the link itself (shared by both streams); 0: urgent_rate


@dataclass
class FaultCost:
    """Seconds a fault costs besides its round trip and its bytes: quantiles to draw from."""
    quantiles: list[tuple[float, float]]  # (q, seconds), q from 0 to 1, rising

    def draw(self, rng: random.Random) -> float:
        u = rng.random()
        qs = self.quantiles
        i = bisect.bisect_left([q for q, _ in qs], u)
        if i <= 0:
            return qs[0][1]
        if i >= len(qs):
            return qs[-1][1]
        (q0, v0), (q1, v1) = qs[i - 1], qs[i]
        return v0 + (v1 - v0) * (u - q0) / (q1 - q0) if q1 > q0 else v1


@dataclass
class Case:
    mode: str
    memory: int
    granule: int  # bytes: 4096 (hgm, thp) or the huge page size
    vcpus: int
    sequences: list[list[int]]  # per vCPU, 4 KiB page indices
    zeros: bytes  # workload.zero_map
    link: Link
    cost: FaultCost
    host_cpus: int
    background_cap: float = 0.0  # bytes/s, 0: none
    chunk: int = 4 << 20
    startup: float = 0.0
    seed: int = 0


@dataclass
class Outcome:
    faults: int = 0
    fault_latency: list[float] = field(default_factory=list)
    stalls: list[float] = field(default_factory=list)
    bytes_urgent: int = 0
    bytes_background: int = 0
    migration: float = 0.0
    vcpu_run: float = 0.0

    def as_results(self, mode: str) -> dict:
        return {"mode": mode, "faults": self.faults,
                "fault_latency_seconds": summarize(self.fault_latency),
                "vcpu_stall_seconds": summarize(self.stalls),
                "duration_seconds": self.migration, "vcpu_run_seconds": self.vcpu_run,
                "bytes_urgent": self.bytes_urgent, "bytes_background": self.bytes_background}


class _Migration:
    def __init__(self, case: Case):
        self.c = case
        self.env = simpy.Environment()
        self.rng = random.Random(case.seed)
        self.ppg = case.granule // PAGE_SIZE
        self.granules = case.memory // case.granule
        self.data_pages = workload.data_pages_per_granule(case.zeros, case.memory // PAGE_SIZE,
                                                          self.ppg)
        self.cum = [0, *itertools.accumulate(self.data_pages)]
        self.present: set[int] = set()  # fetched urgently
        self.in_flight: dict[int, simpy.Event] = {}
        self.urgent_sorted: list[int] = []
        self.bg_done = 0  # granules below this are present (background)
        self.bg_next = 0  # granules below this are claimed by the background step in flight
        self.bg_event: simpy.Event | None = None
        self.stream = simpy.Resource(self.env, capacity=1)  # the urgent stream, in order
        self.urgent_busy = 0
        self.last_fault = -1.0
        self.urgent_bytes_total = 0
        self.out = Outcome()
        self.stands_back = case.vcpus >= case.host_cpus
        self.bg_rate = case.link.background_rate
        if case.background_cap:
            self.bg_rate = min(self.bg_rate, case.background_cap)

    def _bytes(self, g: int) -> int:
        return workload.granule_bytes(self.data_pages, g)

    def _present(self, g: int) -> bool:
        return g < self.bg_done or g in self.present or self._bytes(g) == 0

    # -- processes -------------------------------------------------------------------------
    def vcpu(self, seq: list[int]):
        env, pending = self.env, 0.0
        for page in seq:
            g = page // self.ppg
            if self._present(g):
                pending += ACCESS_SECONDS
                continue
            if pending:
                yield env.timeout(pending)
                pending = 0.0
            start = env.now
            while not self._present(g):
                if g in self.in_flight:
                    yield self.in_flight[g]
                elif self.bg_done <= g < self.bg_next and self.bg_event is not None:
                    yield self.bg_event
                else:
                    done = env.event()
                    self.in_flight[g] = done
                    self.out.faults += 1
                    env.process(self.fetch(g, done))
                    yield done
            stall = env.now - start
            if stall >= STALL_THRESHOLD:
                self.out.stalls.append(stall)
        if pending:
            yield env.timeout(pending)
        self.out.vcpu_run = max(self.out.vcpu_run, env.now)

    def fetch(self, g: int, done: simpy.Event):
        env, link = self.env, self.c.link
        read = env.now
        self.last_fault = env.now
        self.urgent_busy += 1
        overhead = self.c.cost.draw(self.rng)
        nbytes = self._bytes(g)
        yield env.timeout(overhead + link.rtt)
        with self.stream.request() as turn:
            yield turn
            yield env.timeout(max(0, nbytes - link.burst) / link.urgent_rate)
        self.urgent_bytes_total += nbytes
        self.out.bytes_urgent += nbytes
        self.present.add(g)
        bisect.insort(self.urgent_sorted, g)
        self.urgent_busy -= 1
        self.last_fault = env.now
        del self.in_flight[g]
        self.out.fault_latency.append(env.now - read)
        done.succeed()

    def background(self):
        env = self.env
        yield env.timeout(self.c.startup)  # connecting, the zero sweep: before the first chunk
        total = self._data_below(self.granules) * PAGE_SIZE
        step = max(1, max(self.c.chunk, int(total / BG_STEPS)) // self.c.granule)
        while self.bg_done < self.granules:
            while self.stands_back and (self.urgent_busy or
                                        env.now - self.last_fault < STAND_BACK_SECONDS):
                yield env.timeout(STAND_BACK_SECONDS)
            hi = min(self.granules, self.bg_done + step)
            nbytes = self._range_bytes(self.bg_done, hi)
            self.bg_next, self.bg_event = hi, env.event()
            before = self.urgent_bytes_total
            yield env.timeout(nbytes / self.bg_rate)
            shared = self.urgent_bytes_total - before  # urgent bytes took the link meanwhile
            if shared:
                yield env.timeout(shared / (self.c.link.rate or self.c.link.urgent_rate))
            self.out.bytes_background += nbytes
            self.bg_done = hi
            self.bg_event.succeed()
        self.out.migration = env.now

    def _data_below(self, g: int) -> int:
        """Data pages in granules [0, g): whole periods, then the prefix sum."""
        whole, rest = divmod(g, len(self.data_pages))
        return whole * self.cum[-1] + self.cum[rest]

    def _range_bytes(self, lo: int, hi: int) -> int:
        data = self._data_below(hi) - self._data_below(lo)
        urgent = self.urgent_sorted
        fetched = urgent[bisect.bisect_left(urgent, lo):bisect.bisect_left(urgent, hi)]
        return int(data * PAGE_SIZE) - sum(self._bytes(g) for g in fetched)

    def run(self) -> Outcome:
        for seq in self.c.sequences:
            self.env.process(self.vcpu(seq))
        bg = self.env.process(self.background())
        self.env.run()
        del bg
        self.out.migration = max(self.out.migration, self.out.vcpu_run)
        return self.out


def simulate(case: Case) -> Outcome:
    return _Migration(case).run()

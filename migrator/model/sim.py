"""The discrete-event model of one postcopy migration (SimPy), for one mode.

Processes:
- one per vCPU: walks its access sequence; an access to a granule that is present costs
  ACCESS_SECONDS (runs of them are one timeout: pages are aggregated into runs between faults);
  an access to an absent granule is a fault, or a wait on the fault or background chunk that
  already carries it;
- one per urgent fetch, as the C fault loop: the fault is read (its queue stage), its request
  sent, one round trip, the granule's data bytes on the urgent stream, which replies in order
  (a FIFO resource: faults queue behind each other's transfers), then verify, install, wake
  (the calibrated cost, split by the fault anatomy's stages); on a shaped link a reply sent
  while a chunk of the pull is on the wire waits behind the shaper's full queue (tbf's
  latency: TCP fills it);
- the background pull: after the zero sweep (every zero granule checked and mapped, no bytes
  on the wire; a fault on one before it is a check and a CONTINUE, no request) it walks the
  memory in steps (a chunk, or 1/BG_STEPS of the memory when that is larger), skipping what
  faults fetched, `window` steps in flight. It stands back, as the C loop does
  (dest_background.c), while a fault's request is in flight (from its read to its reply's
  last byte) or a fault was read or installed less than STAND_BACK_SECONDS ago, when the
  guest's vCPUs fill the host's CPUs, and while a vCPU waits on one of its own runs; it
  looks again every PREEMPT_POLL_SECONDS.
Both streams' bytes cross one bottleneck (bottleneck.py): the shaped link, or unshaped this
host's CPUs, shared max-min fair while both send, each at most at its own calibrated rate.

The pull's first bytes wait for the calibrated start-up (its stream and set-up, fitted to the
calibration runs' migration times). The migration ends when the last granule is present,
and is declared (and timed) by the destination at its next completion check (every
COMPLETION_TICK_S, 1 ms, once the pull is done, plus its bookkeeping: the calibrated
offset + k * period, the first at or after the last granule).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass, field

import simpy

from ..dest.migration import FINISH_POLL_S as COMPLETION_TICK_S
from ..protocol import PAGE_SIZE
from ..quantiles import summarize
from . import workload
from .bottleneck import Bottleneck

ACCESS_SECONDS = 1e-7  # a resident access, as the guest's touch loop measures one
STALL_THRESHOLD = 5e-6  # the guest's: slower accesses are stalls
# the C loop's PREEMPT_QUIET_NS: a fault read or installed this recently holds the pull back
STAND_BACK_SECONDS = 0.5e-3
PREEMPT_POLL_SECONDS = 1e-3  # how often the standing-back pull looks again (PREEMPT_POLL_MS)
# The destination starts its loops (the zero sweep, then the pull) and then answers the guest's
# hand-over; the guest starts its vCPUs on that answer. When, the calibration measures
# (Case.vcpu_start: the runs' vcpus_started_after_seconds, 6 to 60 ms on this VM). Without it
# (calibrations from before) they start VCPU_START_SECONDS in, or as the sweep ends if that is
# sooner, and with whole huge pages the pull's first window may leave before them (its bytes
# travel in the background in those calibration runs: Case.pull_first,
# calibration.fit_pull_first); the C loop now waits for the first fault (FIRST_FAULT_WAIT_NS).
VCPU_START_SECONDS = 1e-3
# the C loop's FIRST_FAULT_WAIT_NS: the pull requests no data before the first fault is read,
# or this long into the migration
FIRST_FAULT_WAIT_SECONDS = 0.2
BG_STEPS = 4000


@dataclass
class Link:
    rtt: float  # seconds, the path's (at least the host's floor)
    urgent_rate: float  # bytes/s the urgent stream achieves
    background_rate: float  # bytes/s the background pull achieves
    burst: int = 0  # bytes a reply may take from a full token bucket without waiting
    rate: float = 0.0  # bytes/s of the link itself (shared by both streams); 0: no shared limit
    queue: float = 0.0  # seconds of traffic the shaper queues (tbf's latency); 0: no shaper


@dataclass
class FaultCost:
    """Seconds a fault costs besides its round trip and its bytes: quantiles to draw from."""
    quantiles: list[tuple[float, float]]  # (q, seconds), q from 0 to 1, rising
    per_byte: float = 0.0  # seconds per data byte of the granule: verify and install
    # where the cost falls (the median fault's anatomy, seconds): before the fault loop reads
    # the fault (queue), and after the reply's last byte (verify, install, wake); the rest of a
    # draw, its tail included (waits on the link), between the read and the reply
    before_read: float = 0.0
    after_reply: float = 0.0

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
    window: int = 2  # the pull's steps in flight (the C loop: chunks' worth of data bytes)
    zero_check_per_byte: float = 0.0  # seconds the zero sweep spends per byte it checks
    startup: float = 0.0
    pull_first: bool = False  # the pull's first window leaves before the first fault is read
    vcpu_start: float | None = None  # measured (calibration); None: VCPU_START_SECONDS or the sweep's end
    seed: int = 0
    tick_period: float = COMPLETION_TICK_S  # the destination's completion checks: offset + k * period
    tick_offset: float = 0.0


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


ABSENT, PRESENT, PULLING, FETCHING, ZERO = 0, 1, 2, 3, 4
_ABSENT_BYTE, _PULLING_BYTE, _PRESENT_BYTE, _ZERO_BYTE = (bytes([k]) for k in (ABSENT, PULLING,
                                                                              PRESENT, ZERO))


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
        self.zero_cum = [0, *itertools.accumulate(1 if d == 0 else 0 for d in self.data_pages)]
        # one byte per granule, as the destination's granule table; a zero granule (ZERO) is
        # mapped without the network, by the pull's zero sweep or by its fault
        period = bytes(ZERO if d == 0 else ABSENT for d in self.data_pages)
        whole, rest = divmod(self.granules, len(period))
        self.state = bytearray(period * whole + period[:rest])
        self.cursor = 0  # the pull's next claim starts here; a fault moves it after itself
        self.in_flight: dict[int, simpy.Event] = {}
        self.claims: list[tuple[int, int, simpy.Event]] = []  # the pull's runs in flight
        self.pull_waiters = 0
        self.pull_stream = simpy.Resource(self.env, capacity=1)  # its own stream, in order
        self.stream = simpy.Resource(self.env, capacity=1)  # the urgent stream, in order
        self.urgent_busy = 0  # requests sent, their reply's last byte not yet in (C: in_flight)
        self.last_fault = -1.0  # the fault loop's last read or install (C: last_urgent_ns)
        link = case.link
        self.link = Bottleneck(self.env, link.rate or link.urgent_rate + link.background_rate)
        self.out = Outcome()
        self.vcpus_start = self.env.event()  # at VCPU_START_SECONDS, or the sweep's end
        self.first_read = self.env.event()  # the fault loop reads its first fault
        start = VCPU_START_SECONDS if case.vcpu_start is None else case.vcpu_start
        self.env.timeout(start).callbacks.append(lambda _: self._start_vcpus())
        self.stands_back = case.vcpus >= case.host_cpus
        self.bg_rate = case.link.background_rate
        if case.background_cap:
            self.bg_rate = min(self.bg_rate, case.background_cap)

    def _start_vcpus(self) -> None:
        if not self.vcpus_start.triggered:
            self.vcpus_start.succeed()

    def _bytes(self, g: int) -> int:
        return workload.granule_bytes(self.data_pages, g)

    # -- processes -------------------------------------------------------------------------
    def vcpu(self, seq: list[int]):
        env, state, pending = self.env, self.state, 0.0
        yield self.vcpus_start
        for page in seq:
            g = page // self.ppg
            if state[g] == PRESENT:
                pending += ACCESS_SECONDS
                continue
            if pending:
                yield env.timeout(pending)
                pending = 0.0
            start = env.now
            self.out.faults += 1  # a fault event, whoever then carries the granule
            while state[g] != PRESENT:
                if state[g] == FETCHING:
                    yield self.in_flight[g]
                elif state[g] == PULLING:
                    self.pull_waiters += 1  # the pull claims nothing new while a vCPU waits on it
                    yield next(ev for lo, hi, ev in self.claims if lo <= g < hi)
                    self.pull_waiters -= 1
                else:  # ABSENT or ZERO
                    done = env.event()
                    self.in_flight[g] = done
                    state[g] = FETCHING
                    self.cursor = g + 1 if g + 1 < self.granules else 0
                    env.process(self.fetch(g, done))
                    yield done
            stall = env.now - start
            if stall >= STALL_THRESHOLD:
                self.out.stalls.append(stall)
        if pending:
            yield env.timeout(pending)
        self.out.vcpu_run = max(self.out.vcpu_run, env.now)

    def fetch(self, g: int, done: simpy.Event):
        """As the C fault loop: the fault is read (the pull stands back from then), its
        request sent, its reply received in order on the urgent stream (the request counts
        as in flight until the reply's last byte), then verified, installed, the vCPU woken."""
        env, link, cost = self.env, self.c.link, self.c.cost
        touched = env.now
        nbytes = self._bytes(g)
        overhead = cost.draw(self.rng)
        before = min(cost.before_read, overhead)
        after = min(cost.after_reply, overhead - before)
        between = overhead - before - after
        yield env.timeout(before)
        self.last_fault = env.now
        if not self.first_read.triggered:
            self.first_read.succeed()
        after += nbytes * cost.per_byte
        if not nbytes:  # a zero granule: checked and mapped, no request
            yield env.timeout(between + after)
            self._resolved(g, touched, done)
            return
        self.urgent_busy += 1
        yield env.timeout(between + link.rtt)
        if link.queue and self.link.sending("pull"):
            # the pull's chunk fills the shaper's queue: the reply waits behind all of it
            yield env.timeout(link.queue)
        with self.stream.request() as turn:
            yield turn
            yield self.link.send("urgent", max(0, nbytes - link.burst), link.urgent_rate)
        self.urgent_busy -= 1
        self.out.bytes_urgent += nbytes
        yield env.timeout(after)
        self._resolved(g, touched, done)

    def _resolved(self, g: int, read: float, done: simpy.Event) -> None:
        self.last_fault = self.env.now  # installed: the quiet time counts from here too
        self.state[g] = PRESENT
        del self.in_flight[g]
        self.out.fault_latency.append(self.env.now - read)
        done.succeed()

    def _claim_run(self, most: int) -> tuple[int, int, int] | None:
        """The next run at or after the cursor that starts with an absent granule, wrapping
        (as the C loop). Aggregated: the run spans up to `most` granules, present ones
        included (they are skipped, as their bytes are), so a large memory takes a bounded
        number of steps."""
        state, n = self.state, self.granules
        first = state.find(ABSENT, self.cursor if self.cursor < n else 0)
        if first < 0:
            first = state.find(ABSENT, 0)
            if first < 0:
                return None
        end = min(n, first + most)
        run = state[first:end]
        claimed = run.count(ABSENT)
        state[first:end] = run.replace(_ABSENT_BYTE, _PULLING_BYTE)
        self.cursor = end
        return first, end, claimed

    def _preempted(self) -> bool:
        """As the C loop: claim nothing new while a vCPU waits on the pull's own runs, nor
        while faults are served and the guest's vCPUs fill the host's CPUs."""
        if self.pull_waiters:
            return True
        return self.stands_back and (self.urgent_busy > 0 or
                                     self.env.now - self.last_fault < STAND_BACK_SECONDS)

    def pull(self, lo: int, hi: int, claimed: int, done: simpy.Event):
        """The claimed (absent) granules of [lo, hi): their data pages, at the range's mean
        per data granule (exact at 4 KiB granules, where each holds one)."""
        env = self.env
        data_granules = (hi - lo) - self._zero_granules(lo, hi)
        per = (self._data_below(hi) - self._data_below(lo)) / data_granules if data_granules else 0
        nbytes = int(claimed * per * PAGE_SIZE)
        with self.pull_stream.request() as turn:
            yield turn
            if env.now < self.c.startup:  # the first chunk's bytes wait for the stream's set-up
                yield env.timeout(self.c.startup - env.now)
            yield self.link.send("pull", nbytes, self.bg_rate)
        self.out.bytes_background += nbytes
        self.state[lo:hi] = self.state[lo:hi].replace(_PULLING_BYTE, _PRESENT_BYTE)
        self.claims.remove((lo, hi, done))
        done.succeed()

    def background(self):
        env = self.env
        total = self._data_below(self.granules) * PAGE_SIZE
        step = max(1, max(self.c.chunk, int(total / BG_STEPS)) // self.c.granule)
        yield from self._zero_sweep(step)
        if not self.c.pull_first:
            # faults first (the C loop waits for the first fault read, FIRST_FAULT_WAIT_NS at
            # most); without a measured start the vCPUs start by the sweep's end at the latest
            if self.c.vcpu_start is None:
                self._start_vcpus()
            yield self.first_read | env.timeout(max(0.0, FIRST_FAULT_WAIT_SECONDS - env.now))
        # else (calibrations whose runs show it, from before the C loop waited for the first
        # fault: calibration.fit_pull_first) the pull claims its first window before the vCPUs
        # start. Its bytes wait for the calibrated start-up (its stream's
        # set-up, fitted to the calibration runs' migration times).
        while True:
            if len(self.claims) >= self.c.window:
                yield env.any_of([ev for _, _, ev in self.claims])
                continue
            if self._preempted():
                yield env.timeout(PREEMPT_POLL_SECONDS)
                continue
            run = self._claim_run(step)
            if run is None:
                break
            lo, hi, claimed = run
            done = env.event()
            self.claims.append((lo, hi, done))
            env.process(self.pull(lo, hi, claimed, done))
        while self.claims or self.in_flight:  # the last chunks and urgent fetches
            yield env.any_of([ev for _, _, ev in self.claims] + list(self.in_flight.values()))
        self.out.migration = env.now

    def _zero_sweep(self, step: int):
        """Every zero granule first, a run at a time, standing back for faults as the pull
        does: nothing travels, but the check reads each zero page (at the calibrated verify
        cost per byte)."""
        env, state, n = self.env, self.state, self.granules
        first = state.find(ZERO)
        while first >= 0:
            if self._preempted():
                yield env.timeout(PREEMPT_POLL_SECONDS)
                first = state.find(ZERO, first)
                if first < 0:
                    first = state.find(ZERO)
                continue
            end = min(n, first + step)
            zeros = state.count(ZERO, first, end)
            state[first:end] = state[first:end].replace(_ZERO_BYTE, _PRESENT_BYTE)
            check = zeros * self.c.granule * self.c.zero_check_per_byte
            if check:
                yield env.timeout(check)
            first = state.find(ZERO, end)
            if first < 0:
                first = state.find(ZERO)

    def _zero_granules(self, lo: int, hi: int) -> int:
        whole, rest = divmod(hi, len(self.data_pages))
        upper = whole * self.zero_cum[-1] + self.zero_cum[rest]
        whole, rest = divmod(lo, len(self.data_pages))
        return upper - (whole * self.zero_cum[-1] + self.zero_cum[rest])

    def _data_below(self, g: int) -> int:
        """Data pages in granules [0, g): whole periods, then the prefix sum."""
        whole, rest = divmod(g, len(self.data_pages))
        return whole * self.cum[-1] + self.cum[rest]

    def run(self) -> Outcome:
        for seq in self.c.sequences:
            self.env.process(self.vcpu(seq))
        self.env.process(self.background())
        self.env.run()
        # the destination notices at its next completion check (FINISH_POLL_S apart)
        c, end = self.c, self.out.migration
        k = max(1, math.ceil((end - c.tick_offset) / c.tick_period - 1e-9))
        self.out.migration = c.tick_offset + k * c.tick_period
        return self.out


def simulate(case: Case) -> Outcome:
    return _Migration(case).run()

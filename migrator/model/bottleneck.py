"""The path's narrowest point, shared by the urgent stream and the background pull.

Each stream is one TCP connection through the same shaper (tbf on the veth, or a real link), so
while both have bytes to send they share its rate: each gets an equal share, or less if its own
work caps it lower (the stream's CPU seconds per byte), and what one leaves the other takes
(max-min fairness, TCP's through one FIFO). A transfer's bytes left are recomputed whenever a
flow starts or ends (processor sharing), so a 2 MiB urgent reply sent while the pull's chunk is
on a 200 Mbit/s link takes about twice as long as alone, and the pull slows as much.
"""

from __future__ import annotations

import simpy


def shares(rate: float, ceilings: list[float]) -> list[float]:
    """Max-min fair rates of flows capped at `ceilings` through a link of `rate`."""
    out = [0.0] * len(ceilings)
    left, todo = rate, sorted(range(len(ceilings)), key=lambda i: ceilings[i])
    while todo:
        even = left / len(todo)
        i = todo[0]
        if ceilings[i] <= even:
            out[i] = ceilings[i]
            left -= ceilings[i]
            todo.pop(0)
            continue
        for i in todo:
            out[i] = even
        break
    return out


class Bottleneck:
    def __init__(self, env: simpy.Environment, rate: float):
        self.env, self.rate = env, rate
        self._flows: list[list] = []  # [bytes left, ceiling, done event, rate now, stream]
        self._since = env.now
        self._generation = 0

    def sending(self, stream: str) -> bool:
        return any(f[4] == stream for f in self._flows)

    def send(self, stream: str, nbytes: float, ceiling: float) -> simpy.Event:
        """An event that fires when `nbytes` have crossed, sharing the link meanwhile."""
        done = self.env.event()
        if nbytes <= 0:
            done.succeed()
            return done
        self._advance()
        self._flows.append([float(nbytes), ceiling, done, 0.0, stream])
        self._reschedule()
        return done

    def _advance(self) -> None:
        elapsed, self._since = self.env.now - self._since, self.env.now
        for f in self._flows:
            f[0] -= f[3] * elapsed

    def _reschedule(self) -> None:
        for f, r in zip(self._flows, shares(self.rate, [f[1] for f in self._flows])):
            f[3] = r
        if not self._flows:
            return
        self._generation += 1
        gen = self._generation
        wait = min(max(0.0, f[0]) / f[3] for f in self._flows)
        self.env.timeout(wait).callbacks.append(lambda _: self._next(gen))

    def _next(self, gen: int) -> None:
        if gen != self._generation:  # a flow came or went since: another timeout is due
            return
        self._advance()
        finished = [f for f in self._flows if f[0] <= 1e-6 * max(1.0, f[3])]
        self._flows = [f for f in self._flows if f not in finished]
        for f in finished:
            f[2].succeed()
        self._reschedule()

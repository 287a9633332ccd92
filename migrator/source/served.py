"""What the source has served, per endpoint and per session: /v1/status and /metrics.

The hot path only bumps plain integers here; the Prometheus counters of migrator.metrics are
brought up to date from them when /metrics is scraped (sync_metrics), so a 4 KiB urgent reply
does not pay for a lock per counter.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from migrator import metrics

from .inject import KINDS

MAX_SESSIONS = 1024  # the oldest sessions are forgotten beyond this; the totals keep them
ENDPOINTS = ("manifest", "pages", "urgent", "background", "status", "metrics")


@dataclass
class Counters:
    requests: int = 0  # answered, successfully or not
    bytes: int = 0  # page bytes sent
    bad_request: int = 0  # answered with 400
    out_of_range: int = 0  # answered with 416
    injected: list[int] = field(default_factory=lambda: [0] * len(KINDS))  # wrong pages, by kind

    def add(self, nbytes: int) -> None:
        self.requests += 1
        self.bytes += nbytes

    def refuse(self, status: int) -> None:
        self.requests += 1
        if status == 416:
            self.out_of_range += 1
        else:
            self.bad_request += 1

    def as_json(self) -> dict:
        out = {"requests": self.requests, "bytes": self.bytes,
               "errors": self.bad_request + self.out_of_range,
               "bad_request": self.bad_request, "out_of_range": self.out_of_range}
        if any(self.injected):
            out["injected_wrong_pages"] = dict(zip(KINDS, self.injected))
        return out


@dataclass
class Session:
    first_seen: float = field(default_factory=time.time)
    streams_open: int = 0
    urgent: Counters = field(default_factory=Counters)
    background: Counters = field(default_factory=Counters)
    served_wrong: bytearray | None = None  # corruption injection: pages served wrong once

    def as_json(self) -> dict:
        return {"first_seen": self.first_seen, "streams_open": self.streams_open,
                "urgent": self.urgent.as_json(), "background": self.background.as_json()}


class Stats:
    def __init__(self) -> None:
        self.started = time.time()
        self.endpoints = {name: Counters() for name in ENDPOINTS}
        self.unauthorized = {name: 0 for name in (*ENDPOINTS, "other")}
        self.streams_open = {"urgent": 0, "background": 0}
        self.sessions_seen = 0
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._synced: dict[tuple[str, str], int] = {}
        self.senders: set = set()  # the C senders of open streams: fold() their counts in

    def fold(self) -> None:
        for sender in list(self.senders):
            sender.fold()

    def session(self, name: str) -> Session:
        s = self._sessions.get(name)
        if s is None:
            s = self._sessions[name] = Session()
            self.sessions_seen += 1
            if len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return s

    def as_json(self) -> dict:
        self.fold()
        e = self.endpoints
        return {
            "uptime_seconds": round(time.time() - self.started, 3),
            "sessions_seen": self.sessions_seen,
            "sessions": {name: s.as_json() for name, s in self._sessions.items()},
            "streams": {kind: {**e[kind].as_json(), "open": self.streams_open[kind]}
                        for kind in ("urgent", "background")},
            "pages_endpoint": e["pages"].as_json(),
            "manifests_served": e["manifest"].requests,
            "unauthorized": sum(self.unauthorized.values()),
        }

    def sync_metrics(self) -> None:
        """Add what was served since the last call to the Prometheus counters."""
        self.fold()
        for name, c in self.endpoints.items():
            ok = c.requests - c.bad_request - c.out_of_range
            for key, total in (((name, "ok"), ok), ((name, "bad_request"), c.bad_request),
                               ((name, "out_of_range"), c.out_of_range),
                               ((name, "bytes"), c.bytes)):
                delta = total - self._synced.get(key, 0)
                if delta:
                    self._synced[key] = total
                    if key[1] == "bytes":
                        metrics.SOURCE_SERVED_BYTES.labels(name).inc(delta)
                    else:
                        metrics.SOURCE_REQUESTS.labels(*key).inc(delta)
        for name, total in self.unauthorized.items():
            delta = total - self._synced.get((name, "unauthorized"), 0)
            if delta:
                self._synced[(name, "unauthorized")] = total
                metrics.SOURCE_REQUESTS.labels(name, "unauthorized").inc(delta)

"""The live dashboard: one HTML page, the JSON it polls, and raw latencies for reports.

    /, /dashboard                        the page (public: it holds no data; opened as
                                         /dashboard#token=T it asks the JSON with that token)
    /v1/dashboard                        progress, throughput and latency histograms, now
    /v1/migrations/{session}/latencies   every fault latency of one migration (seconds)

Everything is computed here, so the page only draws: throughput is a rate over the last few
seconds of polls (whoever polls), and the latency histograms are log-spaced bins that grow
from the migration's fault log at each poll.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import threading
import time
from collections import deque
from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web

from ..protocol import PAGE_SIZE
from .dataplane import PRESENT

if TYPE_CHECKING:
    from .daemon import DestDaemon
    from .migration import Migration

# Histogram bins: BINS_PER_DECADE per decade from 1 µs to 100 s; the first and last bins also
# hold whatever falls below or above.
BINS_PER_DECADE = 4
LOW_EXP, HIGH_EXP = -6, 2
EDGES = [10 ** (LOW_EXP + i / BINS_PER_DECADE)
         for i in range((HIGH_EXP - LOW_EXP) * BINS_PER_DECADE + 1)]
MAP_CELLS = 256       # the page map: this many cells, each the fraction of its granules present
RATE_WINDOW_S = 2.0   # throughput: bytes moved over (about) the last this many seconds

_PAGE = "static/dashboard.html"


def bin_index(seconds: float) -> int:
    if seconds <= EDGES[0]:
        return 0
    i = int(math.floor((math.log10(seconds) - LOW_EXP) * BINS_PER_DECADE))
    return min(max(i, 0), len(EDGES) - 2)


class _Track:
    """What the dashboard remembers about one migration between polls."""

    def __init__(self, started: float) -> None:
        # (time, urgent bytes, background bytes); the first poll's rate is the one since start
        self.samples: deque[tuple[float, int, int]] = deque([(started, 0, 0)])

    def rates(self, now: float, urgent: int, background: int) -> tuple[float, float]:
        """Bytes per second on each stream over the last RATE_WINDOW_S of polls."""
        self.samples.append((now, urgent, background))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW_S:
            self.samples.popleft()
        t0, u0, b0 = self.samples[0]
        dt = now - t0
        if dt <= 0:
            return 0.0, 0.0
        return (urgent - u0) / dt, (background - b0) / dt


class Dashboard:
    def __init__(self, daemon: DestDaemon):
        self.daemon = daemon
        self._tracks: dict[str, _Track] = {}
        self._lock = threading.Lock()
        self._html, self._csp = _load_page()

    def snapshot(self) -> dict:
        d = self.daemon
        migrations = list(d.migrations)  # a copy: the guest threads only ever append
        now = time.monotonic()
        by_mode: dict[str, list[int]] = {}
        out = []
        with self._lock:
            for m in migrations:
                track = self._tracks.get(m.session) or self._tracks.setdefault(m.session, _Track(m.started))
                row = self._row(m, track, now)
                out.append(row)
                counts = by_mode.setdefault(m.backing.mode, [0] * (len(EDGES) - 1))
                for i, c in enumerate(row["fault_latency_histogram"]):
                    counts[i] += c
        return {
            "backing": d.backing.as_dict(),
            "hgm_detection": d.hgm.as_dict(),
            "source": d.source.url,
            "image_id": d.manifest.image_id,
            "pages_total": d.manifest.pages,
            "histogram_edges_seconds": EDGES,
            "fault_latency_histogram_by_mode": by_mode,
            "rate_window_seconds": RATE_WINDOW_S,
            "migrations": out,
        }

    def _row(self, m: Migration, track: _Track, now: float) -> dict:
        plane = m.plane
        urgent, background = plane.counters("urgent").bytes, plane.counters("background").bytes
        urgent_rate, background_rate = track.rates(now, urgent, background)
        granule_pages = m.backing.granularity // PAGE_SIZE
        return {
            "session": m.session,
            "mode": m.backing.mode,
            "backing_label": m.backing.label,
            "granularity_bytes": m.backing.granularity,
            "phase": m.phase,
            "error": m.error,
            "pages_total": m.manifest.pages,
            "pages_present": plane.present * granule_pages,
            "faults": plane.counters("urgent").faults,
            "bytes_urgent": urgent,
            "bytes_background": background,
            "urgent_bytes_per_second": urgent_rate,
            "background_bytes_per_second": background_rate,
            "duration_seconds": (m.finished or now) - m.started,
            "fault_latency_histogram": histogram(m.telemetry.fault_latencies()),
            "page_map": page_map(plane.states()),
            # thp: 2 MiB ranges collapsed so far (null in the other modes)
            "collapse": ({"folios": m.collapser.ranges, "collapsed": m.collapser.collapsed,
                          "failed": m.collapser.failed} if m.collapser else None),
        }

    # -- handlers -------------------------------------------------------------------------------
    async def page(self, _: web.Request) -> web.Response:
        return web.Response(text=self._html, content_type="text/html", headers={
            "Content-Security-Policy": self._csp,
            # the token may be in the address: never send it on
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        })

    async def data(self, _: web.Request) -> web.Response:
        return web.json_response(self.snapshot(), headers={"Cache-Control": "no-store"})

    async def latencies(self, request: web.Request) -> web.Response:
        session = request.match_info["session"]
        m = next((m for m in list(self.daemon.migrations) if m.session == session), None)
        if m is None:
            raise web.HTTPNotFound(text=f"no migration {session!r}\n")
        return web.json_response({
            "session": m.session, "mode": m.backing.mode, "backing": m.backing.backing,
            "backing_label": m.backing.label, "phase": m.phase,
            "fault_latency_seconds": m.telemetry.fault_latencies(),
            "vcpu_stall_seconds": list(m.stall_samples),
        })


def histogram(latencies: list[float]) -> list[int]:
    counts = [0] * (len(EDGES) - 1)
    for s in latencies:
        counts[bin_index(s)] += 1
    return counts


def page_map(state: bytes, cells: int = MAP_CELLS) -> list[float]:
    """The fraction of granules present in each of `cells` equal stretches of memory."""
    n = len(state)
    cells = min(cells, n)
    out = []
    for i in range(cells):
        lo, hi = i * n // cells, (i + 1) * n // cells
        out.append(round(state.count(PRESENT, lo, hi) / (hi - lo), 3))
    return out


def _load_page() -> tuple[str, str]:
    """The page, and a Content-Security-Policy that allows exactly its inline script and style."""
    html = resources.files(__package__).joinpath(_PAGE).read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'"
                        for b in bodies)

    csp = (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
           "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
           "frame-ancestors 'none'")
    return html, csp


def add_routes(app: web.Application, daemon: DestDaemon) -> None:
    dash = Dashboard(daemon)
    app.router.add_get("/", dash.page)
    app.router.add_get("/dashboard", dash.page)
    app.router.add_get("/v1/dashboard", dash.data)
    app.router.add_get("/v1/migrations/{session}/latencies", dash.latencies)

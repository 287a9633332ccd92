"""A blocking client of a destination's HTTP API: its status, one migration, its latencies.

    dest = DestClient("http://127.0.0.1:8471", token)
    dest.status()["migrations"]          # every migration it has run or runs
    dest.migration(session)              # one of them, by the guest session's id
    dest.latencies(session)              # raw fault latencies and vCPU stalls (seconds)
"""

from __future__ import annotations

import json
import ssl
import urllib.request

__all__ = ["DestClient"]


class DestClient:
    def __init__(self, url: str, token: str | None = None, *,
                 ssl_context: ssl.SSLContext | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token, self.ssl_context, self.timeout = token, ssl_context, timeout

    def get(self, path: str) -> dict:
        """GET a JSON endpoint; OSError (urllib.error.URLError, HTTPError) when it fails."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        request = urllib.request.Request(self.url + path, headers=headers)
        with urllib.request.urlopen(request, timeout=self.timeout, context=self.ssl_context) as r:
            return json.load(r)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=min(self.timeout, 2),
                                        context=self.ssl_context) as r:
                return r.status == 200
        except OSError:
            return False

    def status(self) -> dict:
        return self.get("/v1/status")

    def dashboard(self) -> dict:
        """The lighter status the dashboard polls (progress, rates)."""
        return self.get("/v1/dashboard")

    def migration(self, session: str) -> dict:
        """The status of the migration of one guest session; LookupError if there is none."""
        for m in self.status()["migrations"]:
            if m["session"] == session:
                return m
        raise LookupError(f"{self.url} has no migration of guest session {session!r}")

    def latencies(self, session: str) -> dict:
        return self.get(f"/v1/migrations/{session}/latencies")

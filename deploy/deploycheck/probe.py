"""Waiting on what the containers serve, from the host (they share its network): free loopback
ports, /healthz, and Prometheus's query API."""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str, context=None) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2, context=context) as r:
            return r.status == 200
    except OSError:
        return False


def wait(what: str, check: Callable[[], T], timeout: float,
         alive: Callable[[], str | None] = lambda: None) -> T:
    """Poll check() until it is truthy. alive() returns why the thing waited on is gone (its
    log), or None while it may still come up."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        gone = alive()
        if gone is not None or time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s" if gone is None
                               else f"{what}: it stopped:\n{gone}")
        time.sleep(0.25)


def prometheus_query(url: str, query: str) -> list[dict]:
    q = urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=5) as r:
        return json.load(r)["data"]["result"]


def scraped(url: str, query: str) -> dict[str, float]:
    """job -> value of query in Prometheus at url; {} while Prometheus does not answer."""
    try:
        return {r["metric"].get("job", ""): float(r["value"][1])
                for r in prometheus_query(url, query)}
    except OSError:
        return {}

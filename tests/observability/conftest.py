"""One real migration watched by a real Prometheus, shared by the Prometheus and Grafana tests.

A source and a destination on loopback, Prometheus scraping both every 250 ms with the bearer
token, and a guest whose migration lasts a few seconds (the background pull waits 2 s), so
Prometheus sees it mid-way and at the end.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from dataclasses import dataclass

import pytest

from e2e.conftest import TOKEN, Dest, run_guest
from helpers import prometheus
from helpers.daemons import start_source, stop_daemon
from helpers.prometheus import PrometheusServer

IMAGE = "128MiB"
SCRAPE_INTERVAL = 0.25  # seconds
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def fetch(url: str, path: str, accept: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if accept:
        headers["Accept"] = accept
    with urllib.request.urlopen(urllib.request.Request(url + path, headers=headers),
                                timeout=10) as r:
        return r.read().decode()


def sample(text: str, name: str) -> float | None:
    """The sum of a metric's samples in a text exposition (None when it has none)."""
    found = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return sum(float(v) for v in found) if found else None


@dataclass
class ScrapedMigration:
    prom: PrometheusServer
    source_url: str
    dest_url: str
    started: float  # time.time() just before the guest connected
    finished: float  # time.time() once the destination's metrics held the guest's report
    migration: dict  # the destination's /v1/status report of the migration
    guest: dict  # the guest's own JSON report
    source_status: dict  # the source's /v1/status after the migration
    metrics: dict  # {"dest"|"source": {"text"|"openmetrics": exposition}} after the migration


@pytest.fixture(scope="package")
def scraped_migration():
    if not prometheus.available():
        pytest.skip("no prometheus binary (apt-get install prometheus; .ci/system-deps)")
    source_proc, source_url = start_source(IMAGE, seed=7, token=TOKEN)
    dest = prom = None
    try:
        dest = Dest(source_url, "hgm", 2 << 20, "--background-delay", "2")
        prom = PrometheusServer({"source": source_url, "dest": dest.url}, TOKEN,
                                scrape_interval=f"{int(SCRAPE_INTERVAL * 1000)}ms")
        prom.wait_up(["source", "dest"])
        started = time.time()
        guest = run_guest(dest, "--vcpus", "2", "--pattern", "uniform", "--accesses", "40000",
                          timeout=120)
        assert guest["migration"]["phase"] == "complete", guest

        # The guest sends its stall samples just before it leaves; wait until the destination
        # has taken them in, then until Prometheus has scraped both daemons after that.
        want_stalls = guest["vcpu_stall_seconds"]["count"]
        deadline = time.monotonic() + 10
        while sample(fetch(dest.url, "/metrics"), "migrator_vcpu_stall_seconds_count") != want_stalls:
            assert time.monotonic() < deadline, fetch(dest.url, "/metrics")
            time.sleep(0.05)
        finished = time.time()
        prom.wait_scraped_after(finished, ["source", "dest"])

        migration = dest.status()["migrations"][0]
        source_status = json.loads(fetch(source_url, "/v1/status"))
        scraped = {name: {"text": fetch(url, "/metrics"),
                          "openmetrics": fetch(url, "/metrics", OPENMETRICS)}
                   for name, url in (("dest", dest.url), ("source", source_url))}
        yield ScrapedMigration(prom, source_url, dest.url, started, finished, migration, guest,
                               source_status, scraped)
    finally:
        if prom is not None:
            prom.stop()
        if dest is not None:
            dest.stop()
        stop_daemon(source_proc)

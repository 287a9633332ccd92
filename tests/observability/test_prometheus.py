"""A real Prometheus scrapes a real source and destination during a migration; what it stored
must agree with what the run itself reported, and promtool must accept both expositions.

The migration (conftest.scraped_migration) is one guest on the emulated-HGM backing; Prometheus
scrapes every 250 ms with the bearer token.
"""

from __future__ import annotations

import bisect
import math
import shutil
import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from migrator.metrics import LATENCY_BUCKETS

pytestmark = pytest.mark.timeout(120)


def _by(prom, expr: str, label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in prom.query(expr)}


def _bucket_of(seconds: float) -> tuple[float, float]:
    """The (lower, upper] latency bucket holding seconds."""
    i = bisect.bisect_left(LATENCY_BUCKETS, seconds)
    return (LATENCY_BUCKETS[i - 1] if i else 0.0), (LATENCY_BUCKETS[i] if i < len(LATENCY_BUCKETS)
                                                    else math.inf)


def _series_over_run(run, expr: str, label: str = "") -> dict[str, list[tuple[float, float]]]:
    """expr's (time, value) at every scrape interval from the guest's start to the settled end,
    by the value of label ("" for an expression giving one series)."""
    result = run.prom.query_range(expr, run.started, run.finished + 0.5, step=0.25)
    return {r["metric"].get(label, ""): [(t, float(v)) for t, v in r["values"]] for r in result}


# -- scraping ------------------------------------------------------------------------------------

def test_both_daemons_were_scraped_with_the_token_many_times_during_the_run(scraped_migration):
    run, prom = scraped_migration, scraped_migration.prom
    assert _by(prom, "up", "job") == {"source": 1.0, "dest": 1.0}, prom.targets()
    window = math.ceil(run.finished - run.started) + 1
    scrapes = _by(prom, f"count_over_time(up[{window}s])", "job")
    assert min(scrapes.values()) >= 5, scrapes
    # every scrape of the run succeeded (a refused token or an unparsable exposition gives 0)
    assert _by(prom, f"min_over_time(up[{window}s])", "job") == {"source": 1.0, "dest": 1.0}


# -- the destination -----------------------------------------------------------------------------

def test_fault_latency_histogram_counts_every_resolved_fault_of_the_run(scraped_migration):
    prom, m = scraped_migration.prom, scraped_migration.migration
    latency = m["fault_latency_seconds"]
    assert latency["count"] == m["faults"] > 1000  # every fault read was resolved
    assert prom.value("sum(migrator_fault_latency_seconds_count)") == latency["count"]
    assert prom.value("sum(migrator_fault_latency_seconds_sum)") == pytest.approx(latency["total"])
    assert prom.value('sum(migrator_fault_latency_seconds_bucket{le="+Inf"})') == latency["count"]
    labels = prom.query("migrator_fault_latency_seconds_count")[0]["metric"]
    assert (labels["mode"], labels["backing"]) == (m["mode"], m["backing"])
    # faults by the kind of thread: the guest told the destination its vCPU threads
    by_thread = _by(prom, "sum by (thread) (migrator_faults_total)", "thread")
    assert sum(by_thread.values()) == m["faults"]
    assert by_thread["vcpu"] > by_thread.get("other", 0)


def test_stall_histogram_and_blocktime_are_what_the_guest_measured(scraped_migration):
    prom, guest = scraped_migration.prom, scraped_migration.guest
    stalls = guest["vcpu_stall_seconds"]
    assert stalls["count"] > 1000
    assert prom.value("sum(migrator_vcpu_stall_seconds_count)") == stalls["count"]
    assert prom.value("sum(migrator_vcpu_stall_seconds_sum)") == pytest.approx(stalls["total"])
    blocktime = _by(prom, "migrator_vcpu_blocktime_seconds_total", "vcpu")
    assert blocktime == pytest.approx({str(v["vcpu"]): v["total"] for v in guest["per_vcpu"]})


def test_quantiles_from_the_buckets_fall_in_the_bucket_of_the_reported_ones(scraped_migration):
    prom, m, guest = scraped_migration.prom, scraped_migration.migration, scraped_migration.guest
    checks = [("migrator_fault_latency_seconds_bucket", q, m["fault_latency_seconds"][name])
              for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))]
    checks.append(("migrator_vcpu_stall_seconds_bucket", 0.5, guest["vcpu_stall_seconds"]["p50"]))
    for bucket, q, reported in checks:
        seen = prom.value(f"histogram_quantile({q}, sum by (le) ({bucket}))")
        low, high = _bucket_of(reported)
        assert low <= seen <= high, f"{bucket} q{q}: Prometheus {seen}, run {reported}"
    # the dashboard's form, live: quantiles per mode over a rate window
    per_mode = _by(prom, "histogram_quantile(0.5, sum by (le, mode) "
                         "(rate(migrator_fault_latency_seconds_bucket[1m])))", "mode")
    assert set(per_mode) == {m["mode"]} and 0 < per_mode[m["mode"]] < 1, per_mode


def test_bytes_and_pages_fetched_urgent_and_background_add_up_to_the_run(scraped_migration):
    prom, m = scraped_migration.prom, scraped_migration.migration
    fetched = _by(prom, "sum by (stream) (migrator_fetched_bytes_total)", "stream")
    assert fetched == {"urgent": m["bytes_urgent"], "background": m["bytes_background"]}
    assert m["bytes_urgent"] > 0 and m["bytes_background"] > 0
    pages = _by(prom, "sum by (stream) (migrator_fetched_pages_total)", "stream")
    assert pages == {"urgent": m["pages_urgent"], "background": m["pages_background"]}
    assert sum(pages.values()) == m["pages_total"]
    assert prom.value("sum(migrator_verified_pages_total)") == m["verified_pages"] == m["pages_total"]


def test_progress_was_seen_mid_migration_and_ended_complete(scraped_migration):
    run, prom, m = scraped_migration, scraped_migration.prom, scraped_migration.migration
    remaining = [v for _, v in _series_over_run(run, "sum(migrator_pages_remaining)")[""]]
    peak = remaining.index(max(remaining))
    assert 0 < remaining[peak] <= m["pages_total"]  # the first scrape may follow some faults
    after = remaining[peak:]
    assert all(a >= b for a, b in zip(after, after[1:])), remaining  # only ever goes down
    assert any(0 < v < m["pages_total"] for v in after), remaining  # a scrape mid-way
    assert after[-1] == 0

    running = _series_over_run(run, 'sum(migrator_migrations{phase="running"})')[""]
    assert sum(v == 1 for _, v in running) >= 3, running
    # the background pull waited 2 s: first only the urgent stream brought bytes
    streams = _series_over_run(run, "sum by (stream) (migrator_fetched_bytes_total)", "stream")
    background = dict(streams["background"])
    assert any(u > 0 and background.get(t, 0) == 0 for t, u in streams["urgent"]), streams

    phases = _by(prom, "sum by (phase) (migrator_migrations)", "phase")
    assert phases.pop("complete") == 1 and set(phases.values()) == {0}, phases
    assert prom.value("sum(migrator_pages_remaining)") == 0
    assert prom.value("sum(migrator_migration_duration_seconds_count)") == 1
    assert prom.value("sum(migrator_migration_duration_seconds_sum)") == pytest.approx(
        m["duration_seconds"])


def test_in_flight_races_retries_and_errors_are_quiet_after_a_clean_run(scraped_migration):
    prom, m = scraped_migration.prom, scraped_migration.migration
    assert prom.value("sum(migrator_urgent_requests_in_flight)") == 0
    races = _by(prom, "sum by (kind) (migrator_install_races_total)", "kind")
    assert {k: races.get(k, 0) for k in ("eexist", "eagain")} == {
        "eexist": m["eexist"], "eagain": m["eagain"]}
    # labelled counters that never moved have no series at all: absent, not zero
    assert prom.query("sum(migrator_errors_total) > 0") == []
    assert sum(_by(prom, "migrator_retries_total", "cause").values()) == m["refetched_pages"]


# -- the source ----------------------------------------------------------------------------------

def test_source_served_at_least_what_the_destination_fetched(scraped_migration):
    prom, m = scraped_migration.prom, scraped_migration.migration
    status = scraped_migration.source_status
    served = _by(prom, 'sum by (endpoint) (migrator_source_served_bytes_total{job="source"})',
                 "endpoint")
    assert served["urgent"] >= m["bytes_urgent"] and served["background"] >= m["bytes_background"]
    assert sum(served.values()) >= m["bytes_urgent"] + m["bytes_background"]
    assert served["urgent"] == status["streams"]["urgent"]["bytes"]
    requests = _by(prom, 'sum by (endpoint) (migrator_source_request_duration_seconds_count'
                         '{job="source"})', "endpoint")
    for stream in ("urgent", "background"):
        assert requests[stream] == status["streams"][stream]["requests"] > 0
    ok = _by(prom, 'sum by (endpoint) (migrator_source_requests_total{job="source", '
                   'outcome="ok"})', "endpoint")
    assert ok["manifest"] >= 1 and ok["urgent"] == requests["urgent"]
    p99 = prom.value('histogram_quantile(0.99, sum by (le) (migrator_source_request_duration_'
                     'seconds_bucket{job="source", endpoint="urgent"}))')
    assert 0 < p99 < 1


def test_each_daemon_exports_samples_of_its_own_metrics_only(scraped_migration):
    prom = scraped_migration.prom
    names = {job: {r["metric"]["__name__"] for r in prom.query(
        f'{{job="{job}", __name__=~"migrator_.+"}}')} for job in ("source", "dest")}
    assert names["source"] and all(n.startswith("migrator_source_") for n in names["source"])
    assert names["dest"] and not any(n.startswith("migrator_source_") for n in names["dest"])


# -- the expositions -----------------------------------------------------------------------------

@pytest.mark.parametrize("daemon", ["dest", "source"])
def test_promtool_check_metrics_passes(scraped_migration, daemon):
    """promtool lints the text format (0.0.4) only; the OpenMetrics answer is checked by the
    strict OpenMetrics parser, and Prometheus itself scraped it (it asks for OpenMetrics first)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("no promtool (apt-get install prometheus; .ci/system-deps)")
    scraped = scraped_migration.metrics[daemon]
    out = subprocess.run([promtool, "check", "metrics"], input=scraped["text"].encode(),
                         capture_output=True, timeout=30)
    problems = (out.stdout + out.stderr).decode()
    assert out.returncode == 0 and problems.strip() == "", problems
    families = {f.name for f in text_string_to_metric_families(scraped["openmetrics"])}
    assert ("migrator_fault_latency_seconds" if daemon == "dest"
            else "migrator_source_served_bytes") in families

"""The destination's live dashboard: its JSON, its auth, and the page in a real headless Chromium.

The browser is Debian's /usr/bin/chromium driven by Playwright (`playwright install` downloads
its own browsers and cannot run here).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers.daemons import start_source, stop_daemon
from e2e.conftest import TOKEN, Dest
from migrator.dest.dashboard import EDGES, _Track, bin_index, histogram, page_map
from migrator.dest.dataplane import ABSENT, BACKGROUND, PRESENT, URGENT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _get(url: str, token: str | None = TOKEN) -> tuple[int, dict | str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            body = r.read().decode()
            return r.status, json.loads(body) if "json" in r.headers["Content-Type"] else body
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _start_guest(dest: Dest, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "migrator.cli", "guest", "--dest-socket",
                             dest.socket, "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def source():
    proc, url = start_source("128MiB", seed=5, token=TOKEN)
    yield url
    stop_daemon(proc)


@pytest.fixture
def slow_dest(source):
    """A destination whose background pull waits 3 s, so progress comes from faults first."""
    dest = Dest(source, "hgm", 2 << 20, "--background-delay", "3")
    yield dest
    dest.stop()


# -- what the server computes -------------------------------------------------------------------

def test_latency_bins_are_log_spaced_from_1us_to_100s_and_clamp_outliers():
    assert EDGES[0] == pytest.approx(1e-6) and EDGES[-1] == pytest.approx(100)
    assert bin_index(1e-9) == 0 and bin_index(1e4) == len(EDGES) - 2
    for i in (0, 5, 17, len(EDGES) - 2):
        middle = (EDGES[i] * EDGES[i + 1]) ** 0.5
        assert bin_index(middle) == i
    # a 4 KiB fault (~150 us) and a 2 MiB fault (~2 ms) never share a bin
    assert bin_index(150e-6) != bin_index(2e-3)


def test_histogram_bins_every_latency_of_the_fault_log():
    counts = histogram([1e-4, 1e-4, 1e-2])
    assert sum(counts) == 3 and counts[bin_index(1e-2)] == 1 and counts[bin_index(1e-4)] == 2


def test_throughput_is_the_rate_over_the_last_polls():
    track = _Track(started=100.0)
    assert track.rates(101.0, 1000, 0) == (1000.0, 0.0)  # first poll: the rate since start
    track.rates(102.0, 3000, 0)
    urgent, background = track.rates(104.5, 3000, 5000)
    assert urgent < 1000 and background > 0  # the old samples fall out of the window


def test_page_map_is_the_fraction_present_per_stretch_of_memory():
    state = bytes([PRESENT, PRESENT, ABSENT, ABSENT, PRESENT, ABSENT, URGENT, BACKGROUND])
    assert page_map(state, cells=4) == [1.0, 0.0, 0.5, 0.0]
    assert len(page_map(bytes(3), cells=256)) == 3


# -- the daemon's endpoints ---------------------------------------------------------------------

def test_page_is_public_its_data_needs_the_token(slow_dest):
    status, html = _get(f"{slow_dest.url}/dashboard", token=None)
    assert status == 200 and "<canvas" not in html and "/v1/dashboard" in html
    assert _get(f"{slow_dest.url}/", token=None)[0] == 200
    assert _get(f"{slow_dest.url}/v1/dashboard", token=None)[0] == 401
    assert _get(f"{slow_dest.url}/v1/dashboard", token="wrong")[0] == 401
    assert _get(f"{slow_dest.url}/v1/migrations/nope/latencies", token=None)[0] == 401
    assert _get(f"{slow_dest.url}/v1/migrations/nope/latencies")[0] == 404
    status, data = _get(f"{slow_dest.url}/v1/dashboard")
    assert status == 200 and data["migrations"] == [] and data["backing"]["mode"] == "hgm"
    with urllib.request.urlopen(f"{slow_dest.url}/dashboard", timeout=10) as r:
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp
        assert r.headers["Referrer-Policy"] == "no-referrer"


# -- the page in a real browser -----------------------------------------------------------------

@pytest.fixture
def browser_page():
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with tempfile.TemporaryDirectory(prefix="migrator-chromium-") as profile, \
            sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1200, "height": 900})
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(20_000)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        try:
            yield page, errors
        finally:
            context.close()


def _shown(page, field: str) -> str | None:
    el = page.query_selector(f"[data-session] [data-field={field}]")
    return el.inner_text() if el else None


def test_dashboard_numbers_change_while_a_migration_runs(slow_dest, browser_page):
    page, errors = browser_page
    page.goto(f"{slow_dest.url}/dashboard?interval=200#token={TOKEN}")
    page.wait_for_selector("body[data-polls]")
    assert TOKEN not in page.url  # taken out of the address bar once read
    assert "No migration yet" in page.inner_text("#migrations")

    guest = _start_guest(slow_dest, "--vcpus", "2", "--pattern", "uniform", "--accesses", "30000")
    seen: list[tuple[str, str]] = []  # (pages present, faults) while the page said "running"
    shot = ARTIFACTS / "dashboard.png"
    try:
        deadline = time.monotonic() + 120
        while guest.poll() is None and time.monotonic() < deadline:
            card = page.query_selector("[data-session]")
            if card and card.get_attribute("data-phase") == "running":
                shown = (_shown(page, "pages_present"), _shown(page, "faults"))
                if not seen or seen[-1] != shown:
                    seen.append(shown)
                if len(seen) == 3:  # mid-migration: the page map is partly filled
                    ARTIFACTS.mkdir(exist_ok=True)
                    page.screenshot(path=str(shot), full_page=True)
            page.wait_for_timeout(100)
        out, err = guest.communicate(timeout=60)
    finally:
        if guest.poll() is None:
            guest.kill()
    report = json.loads(out)
    assert report["migration"]["phase"] == "complete", err

    assert len({present for present, _ in seen}) >= 2, f"pages present never moved: {seen}"
    assert len({faults for _, faults in seen}) >= 2, f"faults never moved: {seen}"
    page.wait_for_selector("[data-session][data-phase=complete]")
    total = report["migration"]["pages_total"]
    assert _shown(page, "pages_present") == str(total)
    assert int(page.inner_text("[data-mode=hgm] [data-field=fault_count]")) == report["migration"]["faults"]
    page.screenshot(path=str(ARTIFACTS / "dashboard-complete.png"), full_page=True)
    print(f"\ndashboard screenshots: {shot} (running), {ARTIFACTS / 'dashboard-complete.png'}")
    assert errors == [], errors


def test_dashboard_without_a_token_asks_for_one(slow_dest, browser_page):
    page, errors = browser_page
    page.goto(f"{slow_dest.url}/dashboard?interval=200")
    page.wait_for_selector("#auth:not([hidden])")
    assert "token" in page.inner_text("#conn")
    page.fill("#token-input", TOKEN)
    page.click("#token-form button")
    page.wait_for_selector("body[data-polls]")
    page.wait_for_selector("#auth[hidden]", state="attached")
    # the only error is the browser's own line about the first, rejected request
    assert all("401" in e for e in errors), errors

"""Fault injection on real daemons: links cut mid-reply, a source killed -9 and restarted,
slow replies. Every run must end with 0 lost and 0 mismatched pages."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from cffi_uffd import SIZE_2M
from helpers.chaos_proxy import ChaosProxy
from helpers.daemons import start_source, stop_daemon
from migrator.client.http import fetch_manifest
from migrator.orchestration import wait_for

from e2e.conftest import TOKEN, Dest, run_guest

SEED = 23
STALL_S = 3.0  # how long the destination is frozen: the fault injected, not a wait


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.fixture
def own_source():
    """A source of our own (these tests kill it), behind a chaos proxy."""
    procs = []

    def start(listen_port: int | None = None):
        extra = ["--listen", f"127.0.0.1:{listen_port}"] if listen_port else []
        proc, url = start_source("64MiB", seed=SEED, token=TOKEN, extra_args=extra)
        procs.append(proc)
        return proc, url

    proc, url = start()
    proxy = ChaosProxy(_port(url), seed=1)
    yield proxy, start, proc
    proxy.close()
    for p in procs:
        stop_daemon(p)


_GUESTS: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_guest_left_behind():
    """A test that fails mid-way must not leave its guest process running: stop it by PID."""
    yield
    while _GUESTS:
        guest = _GUESTS.pop()
        if guest.poll() is None:
            guest.kill()
            guest.wait()


def _start_guest(dest: Dest, *args: str) -> tuple[subprocess.Popen, str]:
    """A guest process, once its migration has started; returns it and the session."""
    guest = subprocess.Popen([sys.executable, "-m", "migrator.cli", "guest", "--dest-socket",
                              dest.socket, *args, "--json"], stdout=subprocess.PIPE, text=True)
    _GUESTS.append(guest)

    def handed_over() -> list:
        assert guest.poll() is None, "the guest exited before handing over its memory"
        return dest.status()["migrations"]

    return guest, wait_for(handed_over, 30, "the guest's handover")[0]["session"]


def _progress(dest: Dest, session: str, key: str) -> dict:
    """The migration once `key` (e.g. pages_present, faults) is above 0, still running."""
    m = wait_for(lambda: (lambda m: m if m[key] > 0 or m["phase"] != "running" else None)(
        dest.migration(session)), 30, f"{key} > 0")
    assert m["phase"] == "running" and m["pages_present"] < m["pages_total"], m  # mid-way
    return m


def _assert_nothing_lost(report: dict, pages: int) -> dict:
    m = report["migration"]
    assert m["phase"] == "complete", m.get("error")
    assert m["verified_pages"] == pages and m["mismatched_pages"] == 0
    assert m["pages_urgent"] + m["pages_background"] == pages  # none lost, none twice
    assert report["verify"]["mismatched_pages"] == 0 and report["verify"]["writes_lost"] == 0
    return m


@pytest.mark.parametrize("mode", ["hgm", "hugepage"])
def test_links_cut_at_random_points_lose_nothing(own_source, pool_2m, mode):
    proxy, _, _ = own_source
    pages = fetch_manifest(proxy.url, TOKEN).pages
    proxy.cut_after = (256 << 10, 6 << 20)  # each connection dies after 256 KiB..6 MiB
    dest = Dest(proxy.url, mode, SIZE_2M, "--resume-deadline", "30")
    try:
        report = run_guest(dest, "--vcpus", "4", "--pattern", "uniform", "--accesses", "1500",
                           "--write-ratio", "0.3")
        m = _assert_nothing_lost(report, pages)
        times = [r["seconds"] for r in m["recoveries"]]
        print(f"{mode}: {proxy.injected} links cut, {len(times)} recoveries, "
              f"max {max(times) * 1e3:.1f} ms, total {sum(times) * 1e3:.1f} ms")
        assert proxy.injected >= 10 and len(times) >= 10
    finally:
        dest.stop()


def test_source_killed_and_restarted_from_the_same_image(own_source):
    proxy, start, proc = own_source
    pages = fetch_manifest(proxy.url, TOKEN).pages
    proxy.delay_s = 0.002  # slow enough that the migration is mid-way when the source dies
    dest = Dest(proxy.url, "hgm", SIZE_2M, "--resume-deadline", "60")
    try:
        guest, session = _start_guest(dest, "--vcpus", "2", "--accesses", "2000")
        _progress(dest, session, "pages_present")
        proc.kill()  # kill -9
        proc.wait()
        proxy.break_all()
        m = dest.wait_phase(session, ("paused",), timeout=10)
        assert m["phase"] == "paused"
        metrics = urllib.request.urlopen(urllib.request.Request(
            dest.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).read().decode()
        assert re.search(r'migrator_migrations\{backing="shmem-emulated-hgm",mode="hgm",'
                         r'phase="paused"\} 1\.0', metrics)
        # the source stays away until the destination has tried to come back, and been refused
        turned_away = proxy.turned_away
        wait_for(lambda: proxy.turned_away >= turned_away + 2, 30, "reconnect attempts")
        _, url = start()
        proxy.upstream_port = _port(url)
        proxy.delay_s = 0
        out, _ = guest.communicate(timeout=120)
        m = _assert_nothing_lost(json.loads(out), pages)
        assert m["recoveries"], "the migration never paused"
        print(f"source restart: recovered in {max(r['seconds'] for r in m['recoveries']):.2f}s")
    finally:
        dest.stop()


def test_migration_fails_clearly_when_the_source_never_returns(own_source):
    proxy, _, proc = own_source
    dest = Dest(proxy.url, "hgm", SIZE_2M, "--resume-deadline", "2", "--background-delay", "1")
    try:
        guest, session = _start_guest(dest, "--vcpus", "1", "--accesses", "50")
        proc.kill()
        proc.wait()
        proxy.break_all()
        proxy.refusing = True
        out, _ = guest.communicate(timeout=60)
        report = json.loads(out)
        assert report["migration"]["phase"] == "failed"
        assert "did not come back within 2s" in report["migration"]["error"]
        assert dest.alive()
    finally:
        dest.stop()


def test_a_guest_whose_vcpus_are_stuck_on_a_failed_migration_reports_and_exits(own_source):
    proxy, _, proc = own_source
    proxy.delay_s = 0.001  # every fault takes a while: a vCPU is surely mid-fault below
    dest = Dest(proxy.url, "hgm", SIZE_2M, "--resume-deadline", "2", "--background-delay", "60")
    try:
        guest, session = _start_guest(dest, "--vcpus", "2", "--pattern", "uniform",
                                      "--accesses", "20000")
        _progress(dest, session, "faults")  # the vCPUs are faulting
        proc.kill()
        proc.wait()
        proxy.break_all()
        proxy.refusing = True
        out, _ = guest.communicate(timeout=60)
        report = json.loads(out)
        assert guest.returncode == 1
        assert report["vcpus_blocked"] is True
        assert report["migration"]["phase"] == "failed"
        assert "did not come back within 2s" in report["migration"]["error"]
    finally:
        dest.stop()


def test_slow_and_truncated_replies(own_source):
    proxy, _, _ = own_source
    pages = fetch_manifest(proxy.url, TOKEN).pages
    proxy.delay_s = 0.0005
    proxy.cut_after = (1 << 20, 8 << 20)
    dest = Dest(proxy.url, "hgm", SIZE_2M)
    try:
        report = run_guest(dest, "--vcpus", "2", "--pattern", "zipf", "--accesses", "1000")
        m = _assert_nothing_lost(report, pages)
        assert proxy.injected >= 3 and m["recoveries"]
    finally:
        dest.stop()


def test_a_destination_that_stalls_for_seconds_loses_nothing(own_source):
    proxy, _, _ = own_source
    pages = fetch_manifest(proxy.url, TOKEN).pages
    proxy.delay_s = 0.001  # long enough a migration to stall in the middle of
    dest = Dest(proxy.url, "hgm", SIZE_2M)
    try:
        guest, session = _start_guest(dest, "--vcpus", "2", "--accesses", "2000")
        _progress(dest, session, "pages_present")  # running, mid-way: the premise
        os.kill(dest.pid, signal.SIGSTOP)  # the whole daemon freezes, streams mid-reply
        time.sleep(STALL_S)
        os.kill(dest.pid, signal.SIGCONT)
        out, _ = guest.communicate(timeout=120)
        m = _assert_nothing_lost(json.loads(out), pages)
        assert m["duration_seconds"] > STALL_S  # the freeze fell inside the migration
    finally:
        dest.stop()

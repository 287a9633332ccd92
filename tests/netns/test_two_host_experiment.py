"""`migrator experiment --two-host`: both modes across a shaped link, measured first, and no
namespace or process left behind, also when interrupted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from helpers.signals import sigint_default
from migrator.netns import ns
from migrator.orchestration import wait_for

from .conftest import ours

CMD = [sys.executable, "-m", "migrator.cli", "experiment"]


def test_every_mode_migrates_across_a_shaped_link(tmp_path):
    done = subprocess.run(
        [*CMD, "--two-host", "--memory", "128MiB", "--hugepage-size", "2M", "--accesses", "300",
         "--bandwidth", "1gbit", "--rtt", "2ms", "--out", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    link = results["link"]
    assert link["requested"]["bandwidth_bits_per_second"] == 10**9
    assert link["requested"]["rtt_seconds"] == 0.002
    assert link["applied"]["bandwidth"]["method"] == "tbf"
    assert link["applied"]["delay"]["method"] in ("netem", "relay-delay")
    assert link["applied"]["loss"]["method"] == "none"
    measured = link["measured"]
    assert measured["rtt_seconds"]["p50"] >= 0.0018
    assert measured["throughput_bits_per_second"] <= 1.1e9
    assert link["shaping_effective"]
    assert [m["mode"] for m in results["modes"]] == ["hgm", "hugepage", "thp"]  # the default
    for m in results["modes"]:
        assert m["phase"] == "complete", m
        assert m["mismatched_pages"] == 0
        assert m["verified_pages"] == m["pages_total"]
        assert m["guest_verify"]["mismatched_pages"] == 0
    # the namespaces of that run are gone (its PID was the child's)
    assert not [n for n in ns.listed() if n in link["namespaces"].values()]


def test_sigint_mid_migration_removes_namespaces_and_processes(tmp_path):
    proc = subprocess.Popen(
        [*CMD, "--two-host", "--memory", "512MiB", "--hugepage-size", "2M", "--modes", "hgm",
         "--accesses", "20000", "--bandwidth", "100mbit", "--rtt", "1ms", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=sigint_default)
    inside: list[int] = []

    def at_the_guest() -> list[int] | None:
        # probe, relay and source in one namespace; destination and guest in the other
        assert proc.poll() is None, proc.stdout.read()
        inside[:] = [p for n in ours(proc.pid) for p in ns.pids(n)]
        return inside if (tmp_path / "guest-hgm.log").exists() and len(inside) >= 4 else None

    try:
        wait_for(at_the_guest, 60, "the run's guest", interval=0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out[-2000:]
    assert ours(proc.pid) == []
    wait_for(lambda: not [p for p in inside if ns.owner_alive(p)], 10,
             "the processes of the namespaces to be gone")


def test_link_flags_need_two_host():
    done = subprocess.run([*CMD, "--rtt", "1ms"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "--two-host" in done.stderr

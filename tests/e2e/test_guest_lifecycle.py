"""Every way a guest can leave after `ready` ends its migration in a named phase with the
reason, and the destination's metrics come back to their true values; guest connections are
bounded, and the one over the limit is told so."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from migrator import unixmessages
from migrator.guest.memory import GuestMemory
from migrator.guest.session import DestinationSession
from migrator.orchestration import wait_for

from .conftest import TOKEN


def _gauges(dest, name: str) -> dict[str, float]:
    """The samples of one gauge of the destination's /metrics, by their phase label (or "")."""
    req = urllib.request.Request(f"{dest.url}/metrics",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    return {s.labels.get("phase", ""): s.value
            for f in text_string_to_metric_families(text) if f.name == name
            for s in f.samples}


DEPARTURES = {
    "unknown message": ({"type": "teleport"}, "guest-error", "unknown message type 'teleport'"),
    "invalid stalls": ({"type": "stalls", "samples_ns": "x"}, "guest-error", "'stalls' needs"),
    "invalid digests": ({"type": "digests", "pages": "x"}, "guest-error", "'pages' must be"),
    "invalid vcpus": ({"type": "vcpus", "thread_ids": [1.5]}, "guest-error", "'thread_ids'"),
    "second memory": ({"type": "memory", "regions": []}, "guest-error", "a second 'memory'"),
    "early bye": ({"type": "bye"}, "guest-error", "'bye' while the migration is running"),
    "disconnect": (None, "guest-lost", "guest disconnected"),
}


@pytest.mark.parametrize("departure", list(DEPARTURES))
def test_a_guest_leaving_mid_migration_ends_it_in_a_named_phase_and_metrics_come_back(
        dest_factory, departure):
    # The pull held back: the migration is still running when the guest leaves.
    dest = dest_factory("hgm", 2 << 20, "--background-delay", "60")
    message, phase, reason = DEPARTURES[departure]
    link = DestinationSession(dest.socket, 1)
    memory = GuestMemory(link.layout["size"], link.layout["memory_page_size"])
    try:
        link.hand_over(memory)
        assert dest.migration(link.session)["phase"] == "running"  # the premise
        assert _gauges(dest, "migrator_migrations")["running"] == 1
        if message is None:
            link.sock.shutdown(socket.SHUT_RDWR)
        else:
            link.send(message)
        m = dest.wait_phase(link.session, (phase,), timeout=30)
        assert reason in m["error"], m["error"]
        migrations = _gauges(dest, "migrator_migrations")
        assert migrations["running"] == 0 and migrations[phase] == 1
        assert _gauges(dest, "migrator_pages_remaining")[""] == 0
    finally:
        link.sock.close()
        memory.close()


def test_a_guest_killed_while_its_vcpus_fault_is_lost_not_a_destination_failure(dest_factory):
    dest = dest_factory("hgm", 2 << 20, "--background-delay", "60")
    for kill in range(5):
        guest = subprocess.Popen([sys.executable, "-m", "migrator.cli", "guest", "--dest-socket",
                                  dest.socket, "--vcpus", "2", "--accesses", "1000000",
                                  "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # killed once its vCPUs have faulted, with their faults being resolved
            m = wait_for(lambda: next((m for m in dest.status()["migrations"][kill:]
                                       if m["faults"] > 100), None), 60, "vCPU faults")
        finally:
            guest.send_signal(signal.SIGKILL)
            guest.wait()
        m = dest.wait_phase(m["session"], ("guest-lost", "failed", "guest-error"), timeout=30)
        assert m["phase"] == "guest-lost", m["error"]
    assert "Traceback" not in dest.log()
    assert _gauges(dest, "migrator_migrations")["running"] == 0


def test_guest_connections_over_the_limit_are_told_so(dest_factory):
    dest = dest_factory("hgm", 2 << 20, "--max-guests", "2")
    held = []
    for _ in range(2):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(dest.socket)
        held.append(s)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as over:
        over.connect(dest.socket)
        over.settimeout(10)
        reply, _ = unixmessages.recv(over)
    assert reply["type"] == "error" and "at most 2 guests" in reply["message"]
    held.pop().close()

    def served() -> dict | None:  # once the session of the closed one has ended
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(dest.socket)
            s.settimeout(10)
            unixmessages.send(s, {"type": "hello", "version": 1, "vcpus": 1})
            reply, _ = unixmessages.recv(s)
            return reply if reply["type"] == "layout" else None

    assert wait_for(served, 30, "a guest served after one left")["type"] == "layout"
    for s in held:
        s.close()

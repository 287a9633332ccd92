"""Migrations run for the benchmark: real source, destination and guest on loopback."""

from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..orchestration import free_port, migrator_command, start_dest, start_source


@dataclass
class Scenario:
    mode: str
    hugepage_size: int
    vcpus: int
    pattern: str
    accesses: int
    background_delay: float = 0.0
    write_ratio: float = 0.0


class Rig:
    """One source serving the benchmark's image; destinations come and go per scenario."""

    def __init__(self, memory: int, log_dir: Path, seed: int = 7):
        self.memory, self.log_dir = memory, log_dir
        self.token = secrets.token_urlsafe(16)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.source = start_source(["--listen", f"127.0.0.1:{port}", "--memory", str(memory),
                                    "--seed", str(seed)], log_dir, name="bench-source",
                                   url=self.url, env={"MIGRATOR_TOKEN": self.token}, timeout=300)

    def run(self, s: Scenario) -> dict:
        """Run one guest migration; returns the dest's migration report with the guest's in it,
        plus the destination's peak anonymous RSS."""
        port = free_port()
        dest_url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory(prefix="migrator-bench-") as tmp:
            sock = str(Path(tmp) / "guest.sock")
            dest = start_dest(self.url, s.mode, s.hugepage_size, sock, self.log_dir,
                              name=f"bench-dest-{s.mode}", listen=f"127.0.0.1:{port}",
                              extra=["--background-delay", str(s.background_delay)],
                              env={"MIGRATOR_TOKEN": self.token})
            try:
                peak = _RssSampler(dest.pid)
                guest = subprocess.run(migrator_command(
                    "guest", "--dest-socket", sock, "--vcpus", str(s.vcpus), "--pattern",
                    s.pattern, "--accesses", str(s.accesses), "--write-ratio",
                    str(s.write_ratio), "--json"), capture_output=True, text=True, timeout=900)
                peak.stop()
                if not guest.stdout.strip():
                    raise RuntimeError(f"guest failed: {guest.stderr[-2000:]}\n{dest.tail()}")
                report = json.loads(guest.stdout)
                req = urllib.request.Request(f"{dest_url}/v1/status",
                                             headers={"Authorization": f"Bearer {self.token}"})
                with urllib.request.urlopen(req, timeout=10) as r:
                    status = json.load(r)
                migration = next(m for m in status["migrations"] if m["session"] == report["session"])
                migration["guest_report"] = report
                migration["dest_peak_rss_anon_bytes"] = peak.peak
                return migration
            finally:
                dest.stop()

    def close(self) -> None:
        self.source.stop()


class _RssSampler:
    """Samples a process's RssAnon (its private memory, not the guest's shared memfd)."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("RssAnon:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

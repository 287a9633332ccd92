"""Migrations run for the benchmark: a real source, destination and guest on loopback.

One source serves the image for the whole bench; each scenario starts its own destination and
a guest that records what each vCPU touched and how long each touch took (`--record`, or
`--replay` of a given trace). A scenario that fails still returns a Run: its error, or the
reports that say what went wrong, are what the bench shows instead of a figure.
"""

from __future__ import annotations

import itertools
import json
import secrets
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..client import fetch_manifest
from ..guest.trace import SCHEMA
from ..orchestration import start_dest, start_guest, start_source
from ..protocol.manifest import Manifest
from . import verdict

_GUEST_TIMEOUT_S = 900


@dataclass(frozen=True)
class Scenario:
    name: str  # which figure it is for, e.g. "P1"
    mode: str
    hugepage_size: int
    vcpus: int = 1
    pattern: str = "uniform"
    accesses: int = 1000
    background_delay: float = 0.0
    seed: int = 1
    replay: Path | None = None  # a trace to replay instead of the pattern


@dataclass
class Run:
    scenario: Scenario
    migration: dict | None = None  # the destination's report of the guest's migration
    guest: dict | None = None  # the guest's own result
    trace: Path | None = None  # what each vCPU touched and how long each touch took
    dest_peak_rss_anon_bytes: int = 0
    error: str | None = None  # why there is no report at all
    label: str = ""

    def problems(self) -> list[str]:
        if self.error:
            return [self.error]
        guest = self.guest or {}
        return verdict.problems(self.migration, guest.get("verify"),
                                vcpus_blocked=bool(guest.get("vcpus_blocked")))

    def require_verified(self) -> None:
        """Refused unless this migration completed verified."""
        verdict.require(self.label, self.problems())

    @property
    def backing(self) -> dict:
        m = self.migration or {}
        return {"backing": m.get("backing"), "backing_label": m.get("backing_label")}

    def summary(self) -> dict:
        """What the JSON keeps of it."""
        m, g = self.migration or {}, self.guest or {}
        keys = ("phase", "error", "backing", "backing_label", "faults", "fault_latency_seconds",
                "fault_stages", "bytes_urgent", "bytes_background", "background_bytes_per_second",
                "verified_pages", "pages_total", "mismatched_pages", "duration_seconds")
        return {"label": self.label, "error": self.error, **{k: m.get(k) for k in keys},
                "vcpu_run_seconds": g.get("vcpu_run_seconds"),
                "vcpu_stall_seconds": g.get("vcpu_stall_seconds"), "guest_verify": g.get("verify"),
                "dest_peak_rss_anon_bytes": self.dest_peak_rss_anon_bytes,
                "problems": self.problems()}


@dataclass
class Rig:
    """One source serving the benchmark's image; destinations come and go per scenario."""

    memory: int
    log_dir: Path
    seed: int = 7
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._count = itertools.count(1)
        self.source = start_source(["--listen", "127.0.0.1:0", "--memory", str(self.memory),
                                    "--seed", str(self.seed)], self.log_dir, name="bench-source",
                                   env={"MIGRATOR_TOKEN": self.token}, timeout=300)
        self.url = self.source.url
        self.manifest: Manifest = fetch_manifest(self.url, self.token)

    def run(self, s: Scenario, dest_args: tuple[str, ...] = ()) -> Run:
        """Migrate one guest through a fresh destination; never raises for a failed migration."""
        label = f"{s.name} run {next(self._count)}"
        name = label.replace(" run ", "-")
        run = Run(s, trace=self.log_dir / f"{name}.trace.json", label=label)
        sock = str(self.log_dir / f"{name}.sock")
        try:
            dest = start_dest(self.url, s.mode, s.hugepage_size, sock, self.log_dir,
                              name=f"{name}-dest", token=self.token,
                              env={"MIGRATOR_TOKEN": self.token},
                              extra=["--background-delay", str(s.background_delay), *dest_args])
        except (RuntimeError, TimeoutError) as e:
            run.error = f"the destination did not start: {verdict.gist(str(e))}"
            return run
        try:
            peak = _RssSampler(dest.pid)
            workload = (["--replay", str(s.replay)] if s.replay else
                        ["--vcpus", str(s.vcpus), "--pattern", s.pattern,
                         "--accesses", str(s.accesses)])
            guest = start_guest(sock, [*workload, "--write-ratio", "0", "--seed", str(s.seed),
                                       "--record", str(run.trace)], self.log_dir,
                                name=f"{name}-guest")
            try:
                guest.wait(_GUEST_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                guest.stop()
                run.error = f"the guest was still running after {_GUEST_TIMEOUT_S} s"
                return run
            finally:
                peak.stop()
            run.dest_peak_rss_anon_bytes = peak.peak
            if not (guest.stdout_path.exists() and guest.stdout_path.read_text().strip()):
                run.error = (f"the guest exited with {guest.returncode} without a result: "
                             f"{verdict.gist(guest.log())} (log: {guest.log_path}; the "
                             f"destination's: {dest.log_path})")
                return run
            run.guest = guest.result()
            run.migration = dest.migration(run.guest["session"])
        except (RuntimeError, TimeoutError, OSError, LookupError, ValueError) as e:
            run.error = f"{type(e).__name__}: {verdict.gist(str(e))}"
        finally:
            dest.stop()
        return run

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


def replay_file(path: Path, pages: int, touched: list[int]) -> Path:
    """A trace for one vCPU reading these pages in this order (for `guest --replay`)."""
    path.write_text(json.dumps({"schema": SCHEMA, "pages": pages, "vcpus": [
        {"pages": touched, "writes": [0] * len(touched), "latency_ns": None}]}) + "\n")
    return path

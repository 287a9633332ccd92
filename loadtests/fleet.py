"""The fleet of a load test: one source, destinations, guests; started, watched, collected, and
all stopped on the way out (by PID), also on an error or Ctrl-C.

Processes are started and waited for by migrator.orchestration; placement is the experiment's:
on this host's loopback, or on two hosts made of network namespaces with a shaped link
(migrator.experiment.two_host), the guests on the destinations'.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from migrator import orchestration
from migrator.experiment.two_host import Loopback, TwoHosts


@dataclass
class Source:
    process: orchestration.Process
    url: str  # as destinations dial it


@dataclass
class Dest:
    name: str
    mode: str
    process: orchestration.Dest


@dataclass
class Guest:
    name: str
    dest: Dest
    pattern: str
    vcpus: int
    accesses: int
    process: orchestration.Guest
    started: float
    ended: float | None = None
    timed_out: bool = False
    record: dict = field(default_factory=dict)


class Fleet:
    def __init__(self, out: Path, link=None, say=print) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.say = say
        self.token = secrets.token_urlsafe(24)
        self.hosts = TwoHosts(link, self.out, say=say) if link else Loopback()
        self.workdir = Path(tempfile.mkdtemp(prefix="migrator-load-"))
        self.source_: Source | None = None
        self.dests: list[Dest] = []
        self.guests: list[Guest] = []

    def __enter__(self) -> Fleet:
        self.hosts.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            for g in self.guests:
                if g.process.poll() is None:
                    g.process.kill()
                    g.process.wait()
            for d in self.dests:
                d.process.stop()
            if self.source_:
                self.source_.process.stop()
        finally:
            self.hosts.__exit__(*exc)
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def link(self) -> dict | None:
        return self.hosts.link

    def source(self, memory: int, seed: int) -> Source:
        endpoint, url = self.hosts.source()
        process = orchestration.start_source(
            ["--listen", endpoint.listen, "--memory", str(memory), "--seed", str(seed)], self.out,
            url=endpoint.url, env={"MIGRATOR_TOKEN": self.token}, prefix=self.hosts.source_prefix,
            timeout=300)
        self.source_ = Source(process, url)
        return self.source_

    def dest(self, name: str, mode: str, hugepage_size: int) -> Dest:
        """A destination, started; wait_healthy() waits for all of them at once."""
        endpoint = self.hosts.dest(name)
        process = orchestration.start_dest(
            self.source_.url, mode, hugepage_size, str(self.workdir / f"{name}.sock"), self.out,
            name=name, listen=endpoint.listen, url=endpoint.url, token=self.token,
            env={"MIGRATOR_TOKEN": self.token}, prefix=self.hosts.dest_prefix, wait=False)
        dest = Dest(name, mode, process)
        self.dests.append(dest)
        return dest

    def wait_healthy(self, timeout: float = 120.0) -> None:
        for d in self.dests:
            d.process.wait_healthy(timeout=timeout)

    def guest(self, name: str, dest: Dest, vcpus: int, pattern: str, accesses: int,
              write_ratio: float, seed: int) -> Guest:
        process = orchestration.start_guest(
            dest.process.socket, ["--vcpus", str(vcpus), "--pattern", pattern, "--accesses",
                                  str(accesses), "--write-ratio", str(write_ratio), "--seed",
                                  str(seed)], self.out, name=name, prefix=self.hosts.dest_prefix)
        g = Guest(name, dest, pattern, vcpus, accesses, process, time.monotonic())
        self.guests.append(g)
        return g

    def wait(self, deadline: float) -> None:
        """Until every guest has exited, or deadline (monotonic): the late ones are killed."""
        while True:
            running = [g for g in self.guests if g.ended is None]
            for g in running:
                if g.process.poll() is not None:
                    g.ended = time.monotonic()
            if all(g.ended is not None for g in self.guests):
                return
            if time.monotonic() > deadline:
                for g in self.guests:
                    if g.ended is None:
                        g.process.kill()
                        g.process.wait()
                        g.ended, g.timed_out = time.monotonic(), True
                return
            time.sleep(0.1)

    def collect(self, g: Guest) -> tuple[dict, dict]:
        """One guest's migration as the summary records it, and its raw latencies (seconds)."""
        record = {"guest": g.name, "dest": g.dest.name, "mode": g.dest.mode, "pattern": g.pattern,
                  "vcpus": g.vcpus, "accesses_per_vcpu": g.accesses,
                  "exit": g.process.returncode,
                  "wall_seconds": (g.ended or time.monotonic()) - g.started, "error": None}
        raw = {"fault_latency_seconds": [], "vcpu_stall_seconds": []}
        result: dict = {}
        if g.timed_out:
            record["error"] = "killed at the scenario's time limit"
        else:
            try:
                result = g.process.result()
            except (RuntimeError, ValueError) as e:
                record["error"] = str(e)[-1500:]
        if record["error"]:
            record["ok"] = False
            return record, raw
        client = g.dest.process.client
        try:
            m = client.migration(result["session"])
            raw = client.latencies(result["session"])
        except (OSError, ValueError, LookupError) as e:
            record.update(ok=False, error=f"cannot read the destination's record: {e}")
            return record, {"fault_latency_seconds": [], "vcpu_stall_seconds": []}
        verify = result.get("verify") or {}
        record.update({
            "session": result["session"], "backing_label": m["backing_label"],
            "phase": m["phase"], "error": m["error"], "faults": m["faults"],
            "duration_seconds": m["duration_seconds"], "pages_total": m["pages_total"],
            "verified_pages": m["verified_pages"], "mismatched_pages": m["mismatched_pages"],
            "bytes_urgent": m["bytes_urgent"], "bytes_background": m["bytes_background"],
            "fault_latency_seconds": m["fault_latency_seconds"],
            "vcpu_stall_seconds": result["vcpu_stall_seconds"],
            "guest_verify": verify,
        })
        record["ok"] = (m["phase"] == "complete" and m["mismatched_pages"] == 0
                        and m["verified_pages"] == m["pages_total"]
                        and verify.get("mismatched_pages") == 0 and verify.get("writes_lost") == 0)
        if not record["ok"] and not record["error"]:
            record["error"] = "not verified: see phase, mismatched_pages and guest_verify"
        return record, {k: raw.get(k, []) for k in ("fault_latency_seconds", "vcpu_stall_seconds")}

"""The fleet of a load test: one source, destinations, guests; started, watched, collected, and
all stopped on the way out (by PID), also on an error or Ctrl-C.

Placement is the experiment's: on this host's loopback, or on two hosts made of network
namespaces with a shaped link (migrator.experiment.two_host), the guests on the destinations'.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from migrator.experiment.processes import Child, migrator_command
from migrator.experiment.two_host import Loopback, TwoHosts


@dataclass
class Source:
    child: Child
    url: str  # as destinations dial it
    here: str  # as this process reaches it


@dataclass
class Dest:
    name: str
    mode: str
    child: Child
    url: str  # as this process reaches it
    socket: str


@dataclass
class Guest:
    name: str
    dest: Dest
    pattern: str
    vcpus: int
    accesses: int
    proc: subprocess.Popen
    out_path: Path
    log_path: Path
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
                if g.proc.poll() is None:
                    g.proc.kill()
                    g.proc.wait()
            for d in self.dests:
                d.child.stop()
            if self.source_:
                self.source_.child.stop()
        finally:
            self.hosts.__exit__(*exc)
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def link(self) -> dict | None:
        return self.hosts.link

    def source(self, memory: int, seed: int) -> Source:
        endpoint, url = self.hosts.source()
        child = Child("source", ["source", "--listen", endpoint.listen, "--memory", str(memory),
                                 "--seed", str(seed)], self.out,
                      env={"MIGRATOR_TOKEN": self.token}, prefix=self.hosts.source_prefix)
        self.source_ = Source(child, url, endpoint.url)
        child.wait_healthy(endpoint.url, timeout=300)
        return self.source_

    def dest(self, name: str, mode: str, hugepage_size: int) -> Dest:
        endpoint = self.hosts.dest(name)
        sock = str(self.workdir / f"{name}.sock")
        child = Child(name, ["dest", "--listen", endpoint.listen, "--source", self.source_.url,
                             "--mode", mode, "--hugepage-size", str(hugepage_size),
                             "--guest-socket", sock], self.out,
                      env={"MIGRATOR_TOKEN": self.token}, prefix=self.hosts.dest_prefix)
        dest = Dest(name, mode, child, endpoint.url, sock)
        self.dests.append(dest)
        return dest

    def wait_healthy(self, timeout: float = 120.0) -> None:
        for d in self.dests:
            d.child.wait_healthy(d.url, timeout=timeout)

    def guest(self, name: str, dest: Dest, vcpus: int, pattern: str, accesses: int,
              write_ratio: float, seed: int) -> Guest:
        out_path, log_path = self.workdir / f"{name}.json", self.out / f"{name}.log"
        with open(out_path, "w") as out, open(log_path, "w") as err:
            proc = subprocess.Popen(
                self.hosts.dest_prefix + migrator_command(
                    "guest", "--dest-socket", dest.socket, "--vcpus", str(vcpus), "--pattern",
                    pattern, "--accesses", str(accesses), "--write-ratio", str(write_ratio),
                    "--seed", str(seed), "--json"),
                stdout=out, stderr=err)
        g = Guest(name, dest, pattern, vcpus, accesses, proc, out_path, log_path, time.monotonic())
        self.guests.append(g)
        return g

    def wait(self, deadline: float) -> None:
        """Until every guest has exited, or deadline (monotonic): the late ones are killed."""
        while True:
            running = [g for g in self.guests if g.ended is None]
            for g in running:
                if g.proc.poll() is not None:
                    g.ended = time.monotonic()
            if all(g.ended is not None for g in self.guests):
                return
            if time.monotonic() > deadline:
                for g in self.guests:
                    if g.ended is None:
                        g.proc.kill()
                        g.proc.wait()
                        g.ended, g.timed_out = time.monotonic(), True
                return
            time.sleep(0.1)

    def get(self, url: str) -> dict:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def collect(self, g: Guest) -> tuple[dict, dict]:
        """One guest's migration as the summary records it, and its raw latencies (seconds)."""
        record = {"guest": g.name, "dest": g.dest.name, "mode": g.dest.mode, "pattern": g.pattern,
                  "vcpus": g.vcpus, "accesses_per_vcpu": g.accesses, "exit": g.proc.returncode,
                  "wall_seconds": (g.ended or time.monotonic()) - g.started, "error": None}
        raw = {"fault_latency_seconds": [], "vcpu_stall_seconds": []}
        text = g.out_path.read_text() if g.out_path.exists() else ""
        if g.timed_out:
            record["error"] = "killed at the scenario's time limit"
        elif not text.strip():
            record["error"] = (f"guest exited {g.proc.returncode} without a report: "
                               f"{g.log_path.read_text(errors='replace')[-1500:]}")
        if record["error"]:
            record["ok"] = False
            return record, raw
        report = json.loads(text)
        try:
            status = self.get(f"{g.dest.url}/v1/status")
            m = next(m for m in status["migrations"] if m["session"] == report["session"])
            raw = self.get(f"{g.dest.url}/v1/migrations/{report['session']}/latencies")
        except (OSError, ValueError, StopIteration) as e:
            record.update(ok=False, error=f"cannot read the destination's record: {e}")
            return record, {"fault_latency_seconds": [], "vcpu_stall_seconds": []}
        verify = report.get("verify") or {}
        record.update({
            "session": report["session"], "backing_label": m["backing_label"],
            "phase": m["phase"], "error": m["error"], "faults": m["faults"],
            "duration_seconds": m["duration_seconds"], "pages_total": m["pages_total"],
            "verified_pages": m["verified_pages"], "mismatched_pages": m["mismatched_pages"],
            "bytes_urgent": m["bytes_urgent"], "bytes_background": m["bytes_background"],
            "fault_latency_seconds": m["fault_latency_seconds"],
            "vcpu_stall_seconds": report["vcpu_stall_seconds"],
            "guest_verify": verify,
        })
        record["ok"] = (m["phase"] == "complete" and m["mismatched_pages"] == 0
                        and m["verified_pages"] == m["pages_total"]
                        and verify.get("mismatched_pages") == 0 and verify.get("writes_lost") == 0)
        if not record["ok"] and not record["error"]:
            record["error"] = "not verified: see phase, mismatched_pages and guest_verify"
        return record, {k: raw.get(k, []) for k in ("fault_latency_seconds", "vcpu_stall_seconds")}

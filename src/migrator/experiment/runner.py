"""Run the comparison: one source, then per mode a destination and a guest, on loopback."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cffi_uffd import SIZE_2M, detect_hgm, hugepages

from ..units import format_size, hugepage_label
from .host_info import host_block
from .processes import Child, free_port, migrator_command


@dataclass
class Plan:
    memory: int
    hugepage_size: int
    modes: list[str]
    pattern: str
    vcpus: int
    accesses: int
    write_ratio: float
    seed: int
    out: Path
    quiet: bool = False


def _say(plan: Plan, text: str) -> None:
    if not plan.quiet:
        print(text, file=sys.stderr, flush=True)


def _needs_hugepages(mode: str, hgm_present: bool) -> bool:
    return mode == "hugepage" or (mode == "hgm" and hgm_present)


@contextlib.contextmanager
def _hugepages_for(plan: Plan, hgm_present: bool):
    """Reserve the pool the run needs (falling back from 1 GiB to 2 MiB), give it back after."""
    if not any(_needs_hugepages(m, hgm_present) for m in plan.modes):
        yield plan.hugepage_size, None
        return
    size = plan.hugepage_size
    while True:
        need = plan.memory // size
        with hugepages.reserved(size, need) as got:
            if got >= need or size == SIZE_2M:
                if got < need:
                    raise SystemExit(f"only {got} of {need} 2 MiB huge pages could be reserved; "
                                     "free memory or use a smaller --memory")
                _say(plan, f"reserved {need} x {hugepage_label(size)} huge pages")
                yield size, f"{need} x {hugepage_label(size)}"
                _say(plan, f"gave back {need} x {hugepage_label(size)} huge pages")
                return
        _say(plan, f"only {got} of {need} 1 GiB pages could be reserved (memory is fragmented; "
                   "reserve at boot with hugepagesz=1G hugepages=N); using 2 MiB pages instead")
        size = SIZE_2M


def _status(url: str, token: str) -> dict:
    req = urllib.request.Request(f"{url}/v1/status", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def _run_mode(plan: Plan, mode: str, hugepage_size: int, source_url: str, token: str,
              workdir: Path) -> dict:
    port = free_port()
    dest_url = f"http://127.0.0.1:{port}"
    sock = str(workdir / f"guest-{mode}.sock")
    dest = Child(f"dest-{mode}", ["dest", "--listen", f"127.0.0.1:{port}", "--source", source_url,
                                  "--mode", mode, "--hugepage-size", str(hugepage_size),
                                  "--guest-socket", sock], plan.out, env={"MIGRATOR_TOKEN": token})
    try:
        dest.wait_healthy(dest_url)
        _say(plan, f"[{mode}] destination up (pid {dest.pid}); guest: {plan.vcpus} vCPUs x "
                   f"{plan.accesses} {plan.pattern} accesses")
        started = time.monotonic()
        guest = subprocess.run(
            migrator_command("guest", "--dest-socket", sock, "--vcpus", str(plan.vcpus),
                             "--pattern", plan.pattern, "--accesses", str(plan.accesses),
                             "--write-ratio", str(plan.write_ratio), "--seed", str(plan.seed),
                             "--json"),
            capture_output=True, text=True, timeout=900)
        (plan.out / f"guest-{mode}.log").write_text(guest.stderr)
        if not guest.stdout.strip():
            raise RuntimeError(f"[{mode}] guest failed (exit {guest.returncode}):\n"
                               f"{guest.stderr[-3000:]}\ndestination log:\n{dest.tail()}")
        report = json.loads(guest.stdout)
        migration = next(m for m in _status(dest_url, token)["migrations"]
                         if m["session"] == report["session"])
        _say(plan, f"[{mode}] {migration['phase']} in {time.monotonic() - started:.1f}s: "
                   f"{migration['faults']} faults, {migration['verified_pages']} pages verified, "
                   f"{migration['mismatched_pages']} mismatched")
        return _result(migration, report)
    finally:
        dest.stop()


def _result(m: dict, guest: dict) -> dict:
    keys = ("mode", "backing", "backing_label", "granularity_bytes", "faults",
            "fault_latency_seconds", "bytes_urgent", "bytes_background", "pages_total",
            "pages_urgent", "pages_background", "zero_pages", "verified_pages",
            "mismatched_pages", "refetched_pages", "eexist", "eagain", "duration_seconds",
            "phase", "error")
    out = {k: m.get(k) for k in keys}
    out["vcpu_stall_seconds"] = guest["vcpu_stall_seconds"]
    out["per_vcpu"] = guest["per_vcpu"]
    out["guest_verify"] = guest.get("verify")
    out["vcpu_run_seconds"] = guest["vcpu_run_seconds"]
    return out


def run(plan: Plan) -> dict:
    plan.out.mkdir(parents=True, exist_ok=True)
    hgm = detect_hgm()
    token = secrets.token_urlsafe(24)
    results: dict = {"host": host_block(hgm), "modes": []}
    with _hugepages_for(plan, bool(hgm.present)) as (hugepage_size, reservation), \
            tempfile.TemporaryDirectory(prefix="migrator-exp-") as tmp:
        results["config"] = {
            "memory_bytes": plan.memory, "memory": format_size(plan.memory),
            "hugepage_size": hugepage_size, "hugepage_size_requested": plan.hugepage_size,
            "hugepages_reserved": reservation, "modes": plan.modes, "pattern": plan.pattern,
            "vcpus": plan.vcpus, "accesses_per_vcpu": plan.accesses,
            "write_ratio": plan.write_ratio, "seed": plan.seed,
        }
        port = free_port()
        source_url = f"http://127.0.0.1:{port}"
        _say(plan, f"generating a {format_size(plan.memory)} guest image (seed {plan.seed}) "
                   "and starting the source")
        source = Child("source", ["source", "--listen", f"127.0.0.1:{port}", "--memory",
                                  str(plan.memory), "--seed", str(plan.seed)], plan.out,
                       env={"MIGRATOR_TOKEN": token})
        try:
            source.wait_healthy(source_url, timeout=300)
            for mode in plan.modes:
                results["modes"].append(_run_mode(plan, mode, hugepage_size, source_url, token,
                                                  Path(tmp)))
        finally:
            source.stop()
    (plan.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results

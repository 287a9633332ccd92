"""The five figures of the benchmark, each divided by its floor from this run."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable

from cffi_uffd import SIZE_1G, SIZE_2M

from ..host import pools
from . import floors
from .scenarios import Rig, Scenario

GOALS = {"P1_p50": "<= 1.3", "P1_p99": "<= 2", "P2": "<= 1.2", "P3": ">= 0.8", "P4": ">= 0.5",
         "P5": "<= 1 % + 64 MiB (P5_limit_percent)"}
# Long enough that the guest's vCPUs finish faulting before the background pull starts.
_ISOLATE_S = 5.0


@contextlib.contextmanager
def _huge_pool(memory: int):
    """1 GiB pages for the whole image if the kernel gives them, else 2 MiB."""
    for size in (SIZE_1G, SIZE_2M):
        need = memory // size
        with pools.reserved(size, need) as got:
            if got >= need:
                yield size
                return
    raise SystemExit("cannot reserve huge pages for the benchmark image")


def measure(quick: bool, log_dir: Path, say: Callable[[str], None]) -> dict:
    memory = SIZE_1G if quick else 2 * SIZE_1G
    n = 1000 if quick else 4000
    raw: dict = {"memory_bytes": memory, "quick": quick, "cores": os.cpu_count()}

    say("floors: C uffd minor round trip, raw TCP ping-pong and stream, memcpy")
    raw["c_uffd_minor_1"] = floors.uffd_minor(pages=n * 2, threads=1)
    raw["c_uffd_minor_4"] = floors.uffd_minor(pages=n * 8, threads=4)
    raw["tcp_pingpong"] = floors.tcp_pingpong(n * 5)

    rig = Rig(memory, log_dir)
    try:
        with _huge_pool(memory) as huge:
            raw["hugepage_size"] = huge
            raw["tcp_stream"] = floors.tcp_stream(huge)
            say(f"P1: hgm, 1 vCPU, {n} uniform accesses, background held back")
            p1 = rig.run(Scenario("hgm", huge, 1, "uniform", n, background_delay=_ISOLATE_S))
            say(f"P2: hugepage {huge >> 20} MiB faults, 1 vCPU, background held back")
            p2 = rig.run(Scenario("hugepage", huge, 1, "sequential", 64, background_delay=_ISOLATE_S))
        say("P3/P5: hgm background pull of the whole image")
        p3 = rig.run(Scenario("hgm", huge, 1, "uniform", 50))
        say(f"P4: hgm, 4 vCPUs, {n} uniform accesses each, background held back")
        p4 = rig.run(Scenario("hgm", huge, 4, "uniform", n, background_delay=_ISOLATE_S * 2))
    finally:
        rig.close()

    c1, c4, tcp, stream = (raw["c_uffd_minor_1"], raw["c_uffd_minor_4"], raw["tcp_pingpong"],
                           raw["tcp_stream"])
    stall1 = p1["guest_report"]["vcpu_stall_seconds"]
    p1_floor_p50 = (c1["p50_ns"] + tcp["p50_ns"]) / 1e9
    p1_floor_p99 = (c1["p99_ns"] + tcp["p99_ns"]) / 1e9
    p2_fault = p2["fault_latency_seconds"]["p50"]
    p2_floor = stream["tcp_seconds"] + stream["memcpy_seconds"]
    p4_rate = p4["faults"] / p4["guest_report"]["vcpu_run_seconds"]
    p5_bytes = p3["dest_peak_rss_anon_bytes"]
    result = {
        "P1_p50": stall1["p50"] / p1_floor_p50,
        "P1_p99": stall1["p99"] / p1_floor_p99,
        "P2": p2_fault / p2_floor,
        "P3": p3["background_bytes_per_second"] / stream["tcp_bytes_per_s"],
        "P4": p4_rate / c4["faults_per_s"],
        "P5": 100.0 * p5_bytes / memory,
        "P5_limit_percent": 100.0 * (0.01 * memory + (64 << 20)) / memory,
        "goals": GOALS,
        "raw": {
            **raw,
            "P1_vcpu_stall_seconds": stall1, "P1_floor_p50_seconds": p1_floor_p50,
            "P1_floor_p99_seconds": p1_floor_p99, "P1_faults": p1["faults"],
            "P2_fault_latency_seconds": p2["fault_latency_seconds"],
            "P2_bytes_urgent": p2["bytes_urgent"], "P2_floor_seconds": p2_floor,
            "P3_background_bytes_per_second": p3["background_bytes_per_second"],
            "P3_bytes_background": p3["bytes_background"],
            "P4_faults": p4["faults"], "P4_faults_per_second": p4_rate,
            "P4_vcpu_run_seconds": p4["guest_report"]["vcpu_run_seconds"],
            "P5_dest_peak_rss_anon_bytes": p5_bytes,
            "verified": {name: (m["verified_pages"], m["mismatched_pages"], m["phase"])
                         for name, m in (("P1", p1), ("P2", p2), ("P3", p3), ("P4", p4))},
        },
    }
    return result

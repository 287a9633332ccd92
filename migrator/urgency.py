"""Scheduling the urgent path: the threads a vCPU's fault waits on run before any other.

On a host with spare cores the fault thread and the source's urgent sender always find a CPU;
on a small one they queue behind vCPU threads and the background pull, and the stall measured
is the emulator's scheduling, not postcopy. SCHED_FIFO tells the kernel which thread matters.
It needs CAP_SYS_NICE; without it the thread stays as it was and the reports say so.
"""

from __future__ import annotations

import os

URGENT_PRIORITY = 10  # of 1..99: above normal threads, below the kernel's own RT threads
# The destination's background loop runs at this nice while no vCPU waits on it, so the vCPUs
# and the urgent path find a CPU first on a small host (dest_background.c).
BACKGROUND_NICE = int(os.environ.get("MIGRATOR_BACKGROUND_NICE", "10"))


_CAP_SYS_NICE = 23


def may_reprioritize() -> bool:
    """Whether this process holds CAP_SYS_NICE: without it, it does not even ask (a hardened
    unit filters the system calls out, and the answer would be no anyway)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_NICE & 1)
    except OSError:
        pass
    return False


def make_urgent() -> str:
    """Run the calling thread SCHED_FIFO; returns how it runs now, for reports."""
    if not may_reprioritize():
        return "normal (SCHED_FIFO needs CAP_SYS_NICE)"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(URGENT_PRIORITY))
    except PermissionError:
        return "normal (SCHED_FIFO needs CAP_SYS_NICE)"
    except OSError as e:
        return f"normal (SCHED_FIFO refused: {e.strerror})"
    return f"fifo:{URGENT_PRIORITY}"


"""Who gets a CPU first on a small host: the destination's background loop stands back.

On a host with spare cores every loop finds a CPU; on a small one the background pull's threads
compete with the vCPUs and the urgent path, and the stall measured would be the emulator's
scheduling, not postcopy. The background loop runs niced (dest_background.c), and is lifted back
while a vCPU waits on it. Lifting a priority needs CAP_SYS_NICE: without it, nothing is niced.

(The urgent path itself runs as a normal thread: SCHED_FIFO was measured here and made faults
slower, since a woken real-time thread is sent to another CPU, and a wake-up across CPUs costs
40-50 us on this kind of VM.)
"""

from __future__ import annotations


# The destination's background loop runs at this nice while no vCPU waits on it.
BACKGROUND_NICE = 10
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

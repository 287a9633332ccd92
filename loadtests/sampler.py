"""CPU and memory of running daemons, from /proc/<pid>/stat and /proc/<pid>/status."""

from __future__ import annotations

import os
import threading
import time

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of pid so far (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the name may hold spaces and parens
    return (int(fields[11]) + int(fields[12])) / _TICK


def memory(pid: int) -> dict:
    """VmRSS, VmHWM (peak RSS) in bytes and Threads, from /proc/<pid>/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
            elif key == "Threads":
                out[key] = int(value)
    return out


class Sampler:
    """Samples processes every interval seconds in a thread, between start() and stop()."""

    def __init__(self, pids: dict[str, int], interval: float = 0.25) -> None:
        self.pids = pids
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._cpu0: dict[str, float] = {}
        self._rss: dict[str, list[int]] = {name: [] for name in pids}
        self._last: dict[str, dict] = {}
        self._cpu1: dict[str, float] = {}
        self.began = self.ended = 0.0

    def start(self) -> Sampler:
        self.began = time.monotonic()
        self._cpu0 = {n: self._cpu(p) for n, p in self.pids.items()}
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self.ended = time.monotonic()
        self._sample()
        wall = self.ended - self.began
        out = {}
        for name in self.pids:
            cpu = self._cpu1.get(name, 0.0) - self._cpu0.get(name, 0.0)
            rss = self._rss[name]
            last = self._last.get(name, {})
            out[name] = {
                "pid": self.pids[name], "wall_seconds": wall, "cpu_seconds": cpu,
                "cpu_percent": 100 * cpu / wall if wall else 0.0,
                "rss_bytes_max": max(rss, default=0),
                "rss_bytes_mean": sum(rss) / len(rss) if rss else 0,
                "rss_peak_bytes": last.get("VmHWM", 0), "threads": last.get("Threads", 0),
                "samples": len(rss),
            }
        return out

    def _cpu(self, pid: int) -> float:
        try:
            return cpu_seconds(pid)
        except (OSError, ValueError, IndexError):
            return 0.0

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            try:
                mem = memory(pid)
                self._cpu1[name] = cpu_seconds(pid)
            except (OSError, ValueError, IndexError):
                continue  # gone: its last sample stands
            self._last[name] = mem
            self._rss[name].append(mem.get("VmRSS", 0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

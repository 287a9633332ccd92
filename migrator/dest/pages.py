"""Which granules of a guest's memory are absent, being fetched, or present.

A granule is the unit of install: 4 KiB in hgm mode, the huge page in hugepage mode. Exactly
one resolver claims a granule (the fault resolver or the background puller), so the same page
is never fetched or installed twice; faults on a claimed granule just wait for its install.
"""

from __future__ import annotations

import threading

ABSENT, CLAIMED, PRESENT, POISONED = 0, 1, 2, 3  # PRESENT and POISONED are both done


class PageTable:
    def __init__(self, granules: int):
        self.granules = granules
        self.state = bytearray(granules)
        self.present = 0  # granules done: installed or poisoned
        self.lock = threading.Lock()
        self.cursor = 0  # where the background puller continues; moved to just after each fault
        self.all_present = threading.Event()

    def claim(self, granule: int) -> int:
        """Claim one granule for the caller if absent; returns the state it was in."""
        with self.lock:
            s = self.state[granule]
            if s == ABSENT:
                self.state[granule] = CLAIMED
            return s

    def claim_run(self, max_granules: int) -> tuple[int, int] | None:
        """Claim the next run of absent granules at or after the cursor (wrapping); None if none."""
        with self.lock:
            start = self.state.find(ABSENT, self.cursor)
            if start < 0:
                start = self.state.find(ABSENT, 0)
                if start < 0:
                    return None
            end = start + 1
            limit = min(self.granules, start + max_granules)
            while end < limit and self.state[end] == ABSENT:
                end += 1
            self.state[start:end] = bytes([CLAIMED]) * (end - start)
            self.cursor = end
            return start, end

    def mark_present(self, start: int, end: int) -> None:
        with self.lock:
            self.state[start:end] = bytes([PRESENT]) * (end - start)
            self.present += end - start
            if self.present == self.granules:
                self.all_present.set()

    def mark_poisoned(self, granule: int) -> None:
        """The granule holds a poison marker: done, and never fetched or installed again."""
        with self.lock:
            was = self.state[granule]
            self.state[granule] = POISONED
            if was not in (PRESENT, POISONED):
                self.present += 1
                if self.present == self.granules:
                    self.all_present.set()

    def release(self, start: int, end: int) -> None:
        """Give a claimed run back (its fetch failed); it will be claimed again."""
        with self.lock:
            self.state[start:end] = bytes(end - start)
            self.cursor = min(self.cursor, start)

    def fault_at(self, granule: int) -> None:
        """Pages after a faulting page are likely next: continue background pulling there."""
        self.cursor = granule + 1 if granule + 1 < self.granules else 0

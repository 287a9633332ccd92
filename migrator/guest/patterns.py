"""Access patterns of synthetic vCPUs: which 4 KiB page each access touches.

Deterministic from (seed, vcpu, pages), so every mode replays the same access sequence.
"""

from __future__ import annotations

import itertools
import math
import random

PATTERNS = ("sequential", "uniform", "zipf", "hotset")
ZIPF_S = 1.1
HOTSET_FRACTION, HOTSET_HIT_RATE = 0.10, 0.90


def _scatter(pages: int, seed: int):
    """A bijection rank -> page that spreads popular ranks over the whole memory."""
    a = (0x9E3779B97F4A7C15 ^ seed) % pages | 1
    while math.gcd(a, pages) != 1:
        a += 2
    b = seed * 2654435761 % pages
    return lambda rank: (rank * a + b) % pages


def pages_for(pattern: str, pages: int, vcpu: int, vcpus: int, accesses: int, seed: int) -> list[int]:
    rng = random.Random(f"{seed}:{vcpu}:{pattern}")
    if pattern == "sequential":
        stripe = pages // vcpus
        first = vcpu * stripe
        return [first + i % stripe for i in range(accesses)]
    if pattern == "uniform":
        return [rng.randrange(pages) for _ in range(accesses)]
    scatter = _scatter(pages, seed)  # shared by all vCPUs: they agree on what is hot
    if pattern == "zipf":
        cum = list(itertools.accumulate(1.0 / (r ** ZIPF_S) for r in range(1, pages + 1)))
        ranks = rng.choices(range(pages), cum_weights=cum, k=accesses)
        return [scatter(r) for r in ranks]
    if pattern == "hotset":
        hot = max(1, int(pages * HOTSET_FRACTION))
        return [scatter(rng.randrange(hot)) if rng.random() < HOTSET_HIT_RATE
                else rng.randrange(pages) for _ in range(accesses)]
    raise ValueError(f"unknown pattern {pattern!r}: use one of {', '.join(PATTERNS)}")


def writes_for(vcpu: int, accesses: int, write_ratio: float, seed: int) -> bytes:
    rng = random.Random(f"{seed}:{vcpu}:writes")
    return bytes(1 if rng.random() < write_ratio else 0 for _ in range(accesses))


def read_offsets(vcpu: int, accesses: int, seed: int) -> list[int]:
    """8-byte aligned offsets within each page for reads."""
    rng = random.Random(f"{seed}:{vcpu}:offsets")
    return [rng.randrange(512) * 8 for _ in range(accesses)]

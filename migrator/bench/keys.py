"""The bench's keys and their goals: each key a figure ÷ its reference, or a plain figure."""

from __future__ import annotations

KEYS = ("P1_p50", "P1_p99", "P1bg_p50", "P1bg_p99", "P2", "P3", "P4", "P5", "STALL_RATIO")

_GOALS = {
    "P1_p50": ("<=", 1.3), "P1_p99": ("<=", 2.0),
    "P1bg_p50": ("<=", 1.5), "P1bg_p99": ("<=", 3.0),
    "P2": ("<=", 1.2), "P3": (">=", 0.8), "P4": (">=", 0.5),
    "STALL_RATIO": ("<=", 0.2),
}


def goals_for(memory: int) -> dict[str, tuple[str, float]]:
    """Each key's (comparison, limit); P5's limit, 1 % of guest memory + 64 MiB, is in % of it."""
    p5 = 100.0 * (0.01 * memory + (64 << 20)) / memory
    return {**_GOALS, "P5": ("<=", p5)}


def met(goal: tuple[str, float], value: float) -> bool:
    op, limit = goal
    return value <= limit if op == "<=" else value >= limit

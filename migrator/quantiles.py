"""Latency summaries: count, quantiles, max, total (seconds), for reports and status."""

from __future__ import annotations

from typing import Iterable, Sequence

QUANTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of an already sorted sequence (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, int(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def summarize(values: Iterable[float]) -> dict:
    """{count, p50, p90, p99, max, total} of values (seconds in, seconds out)."""
    v = sorted(values)
    out = {"count": len(v)}
    out.update({name: quantile(v, q) for name, q in QUANTILES})
    out["max"] = v[-1] if v else 0.0
    out["total"] = sum(v)
    return out

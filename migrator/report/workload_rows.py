"""The table's rows for a real workload (the SQLite guest): queries, their latency during
postcopy and after it, the baseline's (all memory local), the slowdown and the rate after the
migration relative to 1 GiB-mapped memory."""

from __future__ import annotations

from typing import Callable

from ..units import format_seconds


def _w(m: dict) -> dict:
    return m.get("workload") or {}


def _latency(phase: str, q: str) -> Callable[[dict, dict], str]:
    def cell(m: dict, _: dict) -> str:
        p = _w(m).get(phase) or {}
        return format_seconds(p[q]) if p.get("count") else "–"
    return cell


def _baseline(q: str) -> Callable[[dict, dict], str]:
    return lambda m, _: (format_seconds(_w(m)["baseline"][q]) if _w(m).get("baseline")
                         else "–")


def _times(key: str) -> Callable[[dict, dict], str]:
    return lambda m, _: f"{_w(m)[key]:.1f}x" if _w(m).get(key) else "–"


def _queries(m: dict, _: dict) -> str:
    q = _w(m).get("queries")
    return "–" if not q else f"{q['total']} ({q['point']}/{q['range']}/{q['join']})"


def _during(m: dict, _: dict) -> str:
    p = _w(m).get("during") or {}
    return str(p.get("count", "–"))


def _answers(m: dict, _: dict) -> str:
    a = _w(m).get("answers_check")
    return "–" if not a else f"{a['checked'] - a['wrong']}/{a['checked']} right"


def _rate(m: dict, _: dict) -> str:
    w = _w(m)
    if not w.get("after_rate"):
        return "–"
    vs = w.get("after_rate_vs_1g")
    ref = w.get("reference_pages") or "1G"
    return (f"{w['after_rate'] / 1e3:.1f}k q/s"
            + (f" ({vs:.2f}x {ref}-mapped)" if vs is not None else ""))


ROWS: list[tuple[str, Callable[[dict, dict], str]]] = [
    ("queries (point/range/join)", _queries),
    ("queries during postcopy", _during),
    ("query p50 during postcopy", _latency("during", "p50")),
    ("query p99 during postcopy", _latency("during", "p99")),
    ("query max during postcopy", _latency("during", "max")),
    ("query p50 after completion", _latency("after", "p50")),
    ("query p99 after completion", _latency("after", "p99")),
    ("baseline query p50 (all local)", _baseline("p50")),
    ("baseline query p99 (all local)", _baseline("p99")),
    ("query p99 slowdown (postcopy / baseline)", _times("slowdown_p99")),
    ("query rate after", _rate),
    ("answers vs a local copy", _answers),
]


def workload_line(results: dict) -> str | None:
    """The p99 slowdown of every mode, as a sentence (None: no workload)."""
    parts = [f"{m['mode']} {m['workload']['slowdown_p99']:.1f}x" for m in results.get("modes", ())
             if (m.get("workload") or {}).get("slowdown_p99")]
    if not parts:
        return None
    return ("query p99 during postcopy over the baseline's (all memory local): "
            + ", ".join(parts))

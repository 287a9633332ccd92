"""Sweeps side by side: the points they share (same grid values and mode), each metric's mean
over repetitions in each sweep, and the ratio to the first sweep."""

from __future__ import annotations

import statistics
from pathlib import Path

from .summary import METRICS, load_tree

SHOWN = ("stall_p50", "stall_p99", "stall_total", "migration")


def _key(row: dict, axes: list[str]) -> tuple:
    return (*(str(row[a]) for a in axes), row["mode"])


def compare(trees: list[Path]) -> dict:
    loaded = [load_tree(t) for t in trees]
    axes = list(loaded[0][0]["spec"]["axes"])
    means: list[dict[tuple, dict]] = []
    for sweep, rows in loaded:
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            groups.setdefault(_key(r, axes), []).append(r)
        means.append({k: {m: statistics.fmean(r[m] for r in g) for m in SHOWN}
                      for k, g in groups.items()})
    shared = [k for k in means[0] if all(k in m for m in means[1:])]
    out = []
    for k in shared:
        row = {"point": dict(zip([*axes, "mode"], k)), "sweeps": [m[k] for m in means]}
        row["ratio"] = {metric: [m[k][metric] / means[0][k][metric] if means[0][k][metric] else None
                                 for m in means[1:]] for metric in SHOWN}
        out.append(row)
    return {"trees": [str(t) for t in trees], "axes": axes, "rows": out,
            "only_in": [len(m) - len(shared) for m in means]}


def text(result: dict) -> str:
    axes = [a for a in result["axes"]
            if len({str(r["point"][a]) for r in result["rows"]}) > 1] + ["mode"]
    names = [Path(t).name for t in result["trees"]]
    head = axes + [f"{METRICS[m][0]} {METRICS[m][2]} ({n})" for m in SHOWN for n in names]
    cells = [head]
    for r in result["rows"]:
        cells.append([str(r["point"][a]) for a in axes] + [
            f"{s[m] * METRICS[m][1]:.4g}" for m in SHOWN for s in r["sweeps"]])
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(c, widths)) for c in cells]
    if any(result["only_in"]):
        lines.append(f"(points in one sweep only, left out: {result['only_in']})")
    return "\n".join(lines)

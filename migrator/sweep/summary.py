"""A sweep's results tree as one table (summary.json, summary.md) and plots of vCPU stall and
migration time against each swept variable (one PNG per variable, one line per mode: the mean
over repetitions and over the points that share the variable's value)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..errors import MigratorError
from ..report.plot import MODE_COLORS
from .runner import SCHEMA

METRICS = {  # column -> (title, unit scale, unit)
    "faults": ("faults", 1, ""),
    "stall_p50": ("stall p50", 1e3, "ms"),
    "stall_p99": ("stall p99", 1e3, "ms"),
    "stall_total": ("total stall", 1, "s"),
    "migration": ("migration", 1, "s"),
    "urgent_mib": ("urgent", 1, "MiB"),
    "background_mib": ("background", 1, "MiB"),
}
PLOTTED = ("stall_p50", "stall_total", "migration")


def row_of(mode: dict) -> dict:
    stall = mode.get("vcpu_stall_seconds") or {}
    return {"faults": mode.get("faults") or 0, "stall_p50": stall.get("p50") or 0.0,
            "stall_p99": stall.get("p99") or 0.0, "stall_total": stall.get("total") or 0.0,
            "migration": mode.get("duration_seconds") or 0.0,
            "urgent_mib": (mode.get("bytes_urgent") or 0) / 2**20,
            "background_mib": (mode.get("bytes_background") or 0) / 2**20}


def load_tree(out: Path) -> tuple[dict, list[dict]]:
    """(sweep.json, one row per complete repetition and mode)."""
    out = Path(out)
    try:
        sweep = json.loads((out / "sweep.json").read_text())
    except (OSError, ValueError) as e:
        raise MigratorError(f"{out}: not a sweep's results tree ({e})") from None
    if sweep.get("schema") != SCHEMA:
        raise MigratorError(f"{out}/sweep.json: schema {sweep.get('schema')!r}, not {SCHEMA}")
    rows = []
    for point in sweep["points"]:
        for rep_path in sorted((out / point["dir"]).glob("rep-*")):
            try:
                results = json.loads((rep_path / "results.json").read_text())
            except (OSError, ValueError):
                continue
            measured = (results.get("link") or {}).get("measured") or {}
            for mode in results.get("modes", []):
                rows.append({"index": point["index"], "rep": int(rep_path.name[4:]),
                             **point["values"], "mode": mode["mode"],
                             "link_rtt_measured": (measured.get("rtt_seconds") or {}).get("p50"),
                             "link_bits_measured": measured.get("throughput_bits_per_second"),
                             **row_of(mode)})
    return sweep, rows


def _cell(key: str, value) -> str:
    if key in METRICS:
        title, scale, unit = METRICS[key]
        return f"{value * scale:.4g}"
    return str(value)


def markdown(sweep: dict, rows: list[dict]) -> str:
    axes = list(sweep["spec"]["axes"])
    cols = ["index", "rep", *axes, "mode", *METRICS]
    head = [c if c not in METRICS else f"{METRICS[c][0]}{' (' + METRICS[c][2] + ')' if METRICS[c][2] else ''}"
            for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(c, r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def swept_axes(sweep: dict) -> list[str]:
    return [k for k, v in sweep["spec"]["axes"].items() if len(v) > 1]


def plot(sweep: dict, rows: list[dict], axis: str, path: Path) -> Path:
    from matplotlib.figure import Figure

    values = [str(v) for v in sweep["spec"]["axes"][axis]]
    fig = Figure(figsize=(4 * len(PLOTTED), 3.6), dpi=100, layout="constrained")
    for ax, metric in zip(fig.subplots(1, len(PLOTTED)), PLOTTED):
        title, scale, unit = METRICS[metric]
        for mode in sweep["spec"]["modes"]:
            xs, ys = [], []
            for i, v in enumerate(values):
                got = [r[metric] * scale for r in rows if r["mode"] == mode and str(r[axis]) == v]
                if got:
                    xs.append(i)
                    ys.append(statistics.fmean(got))
                    ax.scatter([i] * len(got), got, s=10, alpha=0.4,
                               color=MODE_COLORS.get(mode, "#475569"))
            ax.plot(xs, ys, marker="o", label=mode, color=MODE_COLORS.get(mode, "#475569"))
        ax.set_xticks(range(len(values)), values, rotation=20)
        ax.set_xlabel(axis)
        ax.set_ylabel(f"{title} ({unit})")
        if metric.startswith("stall_p"):
            ax.set_yscale("log")
        ax.set_title(f"{title} vs {axis}")
        ax.legend(fontsize=8)
    fig.savefig(path)
    return path


def write(out: Path) -> dict:
    """summary.json, summary.md and plot-<axis>.png in OUT; returns what was written."""
    out = Path(out)
    sweep, rows = load_tree(out)
    expected = len(sweep["points"]) * sweep["spec"]["repetitions"]
    reps = {(r["index"], r["rep"]) for r in rows}
    (out / "summary.json").write_text(json.dumps(
        {"spec": sweep["spec"], "complete_repetitions": len(reps), "expected": expected,
         "rows": rows}, indent=2) + "\n")
    (out / "summary.md").write_text(
        f"# Sweep {sweep['spec']['name']}\n\n{len(reps)} of {expected} repetitions complete.\n\n"
        + markdown(sweep, rows))
    plots = [plot(sweep, rows, axis, out / f"plot-{axis}.png")
             for axis in swept_axes(sweep)] if rows else []
    return {"rows": rows, "complete": len(reps), "expected": expected,
            "table": out / "summary.md", "plots": plots}


def text(sweep: dict, rows: list[dict]) -> str:
    """The table for a terminal: the swept axes, the mode and the metrics."""
    cols = ["index", "rep", *swept_axes(sweep), "mode", *METRICS]
    cells = [[str(c) if c not in METRICS else METRICS[c][0] for c in cols]]
    cells += [[_cell(c, r[c]) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells)

"""The latency CDF: every mode of every run on one log-scale latency axis (PNG, matplotlib).

Left, the CDF (fraction of faults resolved within x); right, the tail (fraction slower than x,
log scale), where the p99 and the worst faults of each mode can be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..units import format_seconds

MODE_COLORS = {"hgm": "#0f8b8d", "hugepage": "#d9731a", "thp": "#7c3aed"}
CYCLE = ["#0f8b8d", "#d9731a", "#2563eb", "#b91c1c", "#7c3aed", "#15803d", "#a16207", "#475569"]
STYLES = {"fault_latency_seconds": "-", "vcpu_stall_seconds": "--",
          "query_latency_seconds": "-", "query_latency_after_seconds": ":",
          "query_latency_baseline_seconds": "-"}
NAMES = {"fault_latency_seconds": "fault resolution", "vcpu_stall_seconds": "vCPU stall",
         "query_latency_seconds": "query, during postcopy",
         "query_latency_after_seconds": "query, after completion",
         "query_latency_baseline_seconds": "query, no migration"}
BASELINE_COLOR = "#475569"
MAX_POINTS = 4000  # per line: a CDF drawn from more points looks the same


@dataclass
class Line:
    label: str
    color: str
    series: str  # a key of STYLES
    samples: list[float]


def _curve(samples: list[float]) -> tuple[list[float], list[float]]:
    """(x, fraction <= x) at up to MAX_POINTS ranks, always keeping the first and the last."""
    v = sorted(s for s in samples if s > 0)
    n = len(v)
    if n <= MAX_POINTS:
        ranks = range(n)
    else:
        ranks = sorted({round(i * (n - 1) / (MAX_POINTS - 1)) for i in range(MAX_POINTS)})
    return [v[i] for i in ranks], [(i + 1) / n for i in ranks]


def _format_seconds(x: float, _pos=None) -> str:
    if x >= 1:
        return f"{x:g} s"
    if x >= 1e-3:
        return f"{x * 1e3:g} ms"
    return f"{x * 1e6:g} µs"


def cdf_png(lines: list[Line], title: str, path: Path) -> Path:
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
    from matplotlib.ticker import FuncFormatter, LogLocator

    fig = Figure(figsize=(11, 4.6), dpi=110, layout="constrained")
    cdf, tail = fig.subplots(1, 2, sharex=True)
    drawn = 0
    for line in lines:
        if not line.samples:
            continue
        x, y = _curve(line.samples)
        style = STYLES[line.series]
        cdf.step(x, y, where="post", color=line.color, linestyle=style, linewidth=1.8,
                 label=f"{line.label}: {NAMES[line.series]} (n={len(line.samples)})")
        tail.step(x, [max(1 - f, 0.5 / len(line.samples)) for f in y], where="post",
                  color=line.color, linestyle=style, linewidth=1.8)
        drawn += 1
    for ax in (cdf, tail):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_major_formatter(FuncFormatter(_format_seconds))
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", axis="x", alpha=0.12)
        ax.set_xlabel("latency (log scale)")
    cdf.set_ylim(0, 1.02)
    cdf.set_ylabel("fraction within latency")
    for q in (0.5, 0.9, 0.99):
        cdf.axhline(q, color="#94a3b8", linewidth=0.8, linestyle=":")
    tail.set_yscale("log")
    tail.set_ylabel("fraction slower (tail)")
    cdf.set_title("CDF", fontsize=10)
    tail.set_title("tail: 1 - CDF", fontsize=10)
    if drawn:
        cdf.legend(loc="best", fontsize=8, framealpha=0.9)
    else:
        cdf.text(0.5, 0.5, "no latency samples in these runs", ha="center",
                 transform=cdf.transAxes)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, format="png")
    return path


STAGE_COLORS = {"queue": "#94a3b8", "request": "#2563eb", "network": "#d9731a",
                "receive": "#eab308", "verify": "#7c3aed", "install": "#0f8b8d", "wake": "#b91c1c"}


def anatomy_png(bars: list[tuple[str, dict]], path: Path) -> Path:
    """One stacked bar per (label, median_fault): where the median fault's stall went."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(11, 1.2 + 0.55 * len(bars)), dpi=110, layout="constrained")
    ax = fig.subplots()
    for row, (label, median) in enumerate(bars):
        left = 0.0
        for stage, color in STAGE_COLORS.items():
            width = median.get(stage, 0.0)
            ax.barh(row, width, left=left, color=color, edgecolor="white",
                    label=stage if row == 0 else None)
            left += width
        ax.text(left, row, f"  {format_seconds(left)}", va="center", fontsize=8)
    ax.set_yticks(range(len(bars)), [label for label, _ in bars])
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(FuncFormatter(_format_seconds))
    ax.set_xlabel("the median fault, from the vCPU's access to its resume")
    fig.legend(ncols=len(STAGE_COLORS), loc="outside lower center", fontsize=8, frameon=False)
    ax.grid(True, axis="x", alpha=0.35)
    fig.suptitle("Fault anatomy: where a 4 KiB (or huge page) fault's stall goes", fontsize=11)
    fig.savefig(path, format="png")
    return path

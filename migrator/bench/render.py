"""The bench's result for people, and its exit status."""

from __future__ import annotations

from ..units import format_seconds, format_size, hugepage_label
from .keys import KEYS

REFUSED, MISSED = 2, 1


def _quantity(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return format_seconds(value)
    if unit == "B/s":
        return f"{value / 1e9:.2f} GB/s"
    if unit == "faults/s":
        return f"{value / 1e3:.1f}k/s"
    if unit == "%":
        return f"{value:.2f} %"
    return f"{value:.3g}"


def text(result: dict) -> str:
    c = result["config"]
    lines = [f"migrator bench{' --quick' if c['quick'] else ''}: {format_size(c['memory_bytes'])} "
             f"guest, {hugepage_label(c['hugepage_size'])} pages, {c['cores']} cores, "
             f"{c['repeats']} rounds; each key a figure ÷ its reference from this run"]
    lines.append("backings: " + "; ".join(f"{mode} = {b['backing_label']} [{b['backing']}]"
                                          for mode, b in sorted(result["backings"].items())))
    lines.append(f"{'key':12} {'value':>8}  {'goal':9} {'met':4} {'figure':>12} {'reference':>12}")
    for key in KEYS:
        f = result["figures"][key]
        goal = result["goals"][key]
        if "refused" in f:
            lines.append(f"{key:12} {'-':>8}  {goal:9} REFUSED: {f['refused']}")
            continue
        met = "yes" if result["met"][key] else "NO"
        lines.append(f"{key:12} {f['value']:8.3f}  {goal:9} {met:4} "
                     f"{_quantity(f['figure'], f['unit']):>12} "
                     f"{_quantity(f.get('reference'), f['unit']):>12}")
    at_ref = result.get("stall_ratio_at_ref_fault")
    if at_ref is not None:  # not in the bench.json of older versions
        lines.append("STALL_RATIO at ref-fault's pace: "
                     + (f"{at_ref['value']:.3f} ({at_ref['what']})" if "value" in at_ref
                        else f"- ({at_ref['refused']})"))
    return "\n".join(lines)


def exit_status(result: dict, check: bool) -> int:
    """REFUSED when any figure was refused; with check, MISSED when a goal was missed; else 0."""
    if result["refused"]:
        return REFUSED
    if check and not all(result["met"].values()):
        return MISSED
    return 0

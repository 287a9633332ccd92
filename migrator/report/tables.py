"""The comparison table: one row per measure, one column per (run, mode); as text, Markdown, HTML.

The one table of migrator's results: `migrator experiment` prints it, `migrator report` prints
and renders it.
"""

from __future__ import annotations

import html
from typing import Callable

from ..units import format_seconds, format_size, hugepage_label
from .runs import Run
from .workload_rows import ROWS as WORKLOAD_ROWS


def duration(seconds: float | None) -> str:
    return "–" if seconds is None else format_seconds(seconds)


def _mib(n: int | None) -> str:
    return "–" if n is None else f"{n / 2**20:.1f} MiB"


def _stat(key: str, q: str) -> Callable[[dict, dict], str]:
    return lambda m, _: duration((m.get(key) or {}).get(q)) if m.get(key) else "–"


def _result(m: dict, _: dict) -> str:
    return m.get("phase", "?") + (f" ({m['error']})" if m.get("error") else "")


def _huge_page(m: dict, c: dict) -> str:
    """The page the guest's memory is made of, in this mode's column: hgm emulated on shmem has
    no huge page at all, thp 2 MiB folios whatever huge page size the run asked for."""
    backing = m.get("backing") or ""
    if backing.startswith("shmem-thp"):
        return "2M THP folio"
    if backing.startswith("shmem"):
        return "none (shmem 4K)"
    return hugepage_label(c["hugepage_size"]) if c.get("hugepage_size") else "–"


def _guest_check(m: dict, _: dict) -> str:
    v = m.get("guest_verify")
    if not v:
        return "–"
    checked = v.get("pages_checked", v.get("sampled_pages", 0))  # older runs sampled
    return (f"{checked - v['mismatched_pages']}/{checked} pages, "
            f"{v['writes_checked'] - v['writes_lost']}/{v['writes_checked']} writes"
            + ("" if "pages_checked" in v else " (sampled)"))


# The median fault's anatomy (fault_stages.median_fault, see dest/telemetry.py): stages from
# the vCPU's access to its resume, and their sum.
ANATOMY = ("queue", "request", "network", "receive", "verify", "install", "wake", "stall")


def _anatomy(stage: str) -> Callable[[dict, dict], str]:
    def cell(m: dict, _: dict) -> str:
        median = (m.get("fault_stages") or {}).get("median_fault")
        return duration(median[stage]) if median else "–"
    return cell


def _rate(bytes_per_second: float | None) -> str:
    return "–" if not bytes_per_second else f"{bytes_per_second / 1e6:.0f} MB/s"


def _collapse(m: dict) -> dict:
    c = m.get("collapse") or {}
    return c if c.get("applies") else {}


def _collapsed(m: dict, _: dict) -> str:
    c = _collapse(m)
    if not c:
        return "–"
    text = f"{c['collapsed']}/{c['folios']}"
    if c.get("failed") or c.get("skipped_poisoned"):
        text += f" ({c['failed']} failed, {c['skipped_poisoned']} skipped: memory error)"
    return text


def _huge_at_handover(m: dict, _: dict) -> str:
    h = _collapse(m).get("at_handover")
    return f"{h['huge']}/{h['folios']}" if h else "–"


def _collapse_time(q: str) -> Callable[[dict, dict], str]:
    return lambda m, _: duration(_collapse(m)["collapse_seconds"][q]) if _collapse(m) else "–"


def _huge_mapped(m: dict, _: dict) -> str:
    h = (m.get("collapse") or {}).get("huge_mapped") or {}
    if "pmd_mapped_bytes" not in h:
        return "–"
    total = m.get("pages_total", 0) * 4096
    huge = h["pmd_mapped_bytes"] + h["hugetlb_bytes"]
    return f"{format_size(huge)}" + (f" ({100 * huge / total:.0f}%)" if total else "")


def _rate_after(m: dict, _: dict) -> str:
    a = m.get("after_migration") or {}
    if not a.get("accesses_per_second"):
        return "–"
    rel = [f"{a['vs_hugepage']:.2f}x hugepage"] if a.get("vs_hugepage") is not None else []
    if a.get("vs_1g") is not None:
        rel.append(f"{a['vs_1g']:.2f}x {a.get('reference_pages') or '1G'}-mapped")
    return f"{a['accesses_per_second'] / 1e6:.1f} M/s" + (f" ({', '.join(rel)})" if rel else "")


def _doing(m: dict, c: dict) -> str:
    w = c.get("workload")
    if w:
        mix = ":".join(str(v) for v in w["mix"].values())
        return f"sqlite {mix}, {c.get('vcpus')} vCPUs x {w['rate_per_vcpu']:g} q/s"
    return f"{c.get('pattern')}, {c.get('vcpus')} vCPUs x {c.get('accesses_per_vcpu')}"


# Huge pages in the guest: what the thp mode collapsed as ranges completed, what is mapped
# huge at the end (every mode), and what that does to the guest's accesses afterwards.
HUGE_ROWS: list[tuple[str, Callable[[dict, dict], str]]] = [
    ("2 MiB folios huge at handover", _huge_at_handover),
    ("2 MiB folios collapsed", _collapsed),
    ("collapsed during migration",
     lambda m, _: str(_collapse(m)["collapsed_during_migration"]) if _collapse(m) else "–"),
    ("collapse p50", _collapse_time("p50")),
    ("collapse p99", _collapse_time("p99")),
    ("collapse total", _collapse_time("total")),
    ("collapses after the last page",
     lambda m, _: duration(_collapse(m).get("after_last_page_seconds")) if _collapse(m) else "–"),
    ("mapped huge after", _huge_mapped),
    ("access rate after", _rate_after),
]


# (row name, cell(mode result, run config)); config rows first, so runs of different set-ups
# are not compared unawares.
ROWS: list[tuple[str, Callable[[dict, dict], str]]] = [
    ("guest memory", lambda m, c: c.get("memory") or format_size(c.get("memory_bytes", 0))),
    ("huge page", lambda m, c: _huge_page(m, c)),
    ("access pattern", _doing),
    ("backing", lambda m, _: m.get("backing_label", "?")),
    ("granularity", lambda m, _: format_size(m["granularity_bytes"]) if m.get("granularity_bytes") else "–"),
    ("faults", lambda m, _: str(m.get("faults", "–"))),
    ("fault latency p50", _stat("fault_latency_seconds", "p50")),
    ("fault latency p90", _stat("fault_latency_seconds", "p90")),
    ("fault latency p99", _stat("fault_latency_seconds", "p99")),
    ("fault latency max", _stat("fault_latency_seconds", "max")),
    ("vCPU stalls", lambda m, _: str((m.get("vcpu_stall_seconds") or {}).get("count", "–"))),
    ("vCPU stall p50", _stat("vcpu_stall_seconds", "p50")),
    ("vCPU stall p99", _stat("vcpu_stall_seconds", "p99")),
    ("vCPU stall max", _stat("vcpu_stall_seconds", "max")),
    ("vCPU stalled total", _stat("vcpu_stall_seconds", "total")),
    ("bytes urgent", lambda m, _: _mib(m.get("bytes_urgent"))),
    ("bytes background", lambda m, _: _mib(m.get("bytes_background"))),
    ("pages verified", lambda m, _: f"{m.get('verified_pages')}/{m.get('pages_total')}"),
    ("pages mismatched", lambda m, _: str(m.get("mismatched_pages", "–"))),
    ("guest check", _guest_check),
    ("faults waited on background", lambda m, _: str(m.get("faults_waited_on_background", "–"))),
    ("background pull", lambda m, _: _rate(m.get("background_bytes_per_second"))),
    *((f"median fault: {stage}", _anatomy(stage)) for stage in ANATOMY),
    *HUGE_ROWS,
    ("migration time", lambda m, _: duration(m.get("duration_seconds"))),
    ("result", _result),
]

# With memory errors injected (--poison), before the result row.
POISON_ROWS: list[tuple[str, Callable[[dict, dict], str]]] = [
    ("memory errors", lambda m, _: str((m.get("poison") or {}).get("errors", 0))),
    ("made inaccessible",
     lambda m, _: format_size((m.get("poison") or {}).get("bytes_inaccessible", 0))),
    ("guest SIGBUS hits",
     lambda m, _: str(((m.get("poison") or {}).get("guest_sigbus") or {}).get("hits", 0))),
]


def stall_ratio(results: dict) -> str | None:
    """Total vCPU stall of hgm over hugepage, as a sentence (None: not both modes complete)."""
    by = {m["mode"]: m for m in results.get("modes", ())
          if m.get("phase") == "complete" and m.get("vcpu_stall_seconds")}
    if "hgm" not in by or "hugepage" not in by:
        return None
    hgm, huge = (by[k]["vcpu_stall_seconds"]["total"] for k in ("hgm", "hugepage"))
    if not huge:
        return None
    return (f"vCPUs stalled {hgm / huge:.2f}x as long in total with 4 KiB faults "
            f"({by['hgm'].get('backing_label', 'hgm')}: {format_seconds(hgm)}) as with whole "
            f"huge pages ({format_seconds(huge)})")


def poison_ratio(results: dict) -> str | None:
    """How much more memory errors took away without HGM, as a sentence (None: no errors)."""
    ratio = (results.get("poison") or {}).get("bytes_inaccessible_ratio_hugepage_to_hgm")
    return f"memory errors take away {ratio:.0f}x more memory without HGM" if ratio else None


class Table:
    def __init__(self, runs: list[Run]):
        self.multi = len(runs) > 1
        self.columns: list[str] = []
        rows = ROWS
        if any(r.results.get("poison") for r in runs):
            rows = rows[:-1] + POISON_ROWS + rows[-1:]
        if any(m.get("workload") for r in runs for m in r.modes):
            rows = rows[:5] + WORKLOAD_ROWS + rows[5:]
        cells: list[list[str]] = []
        for run in runs:
            config = run.results.get("config", {})
            for m in run.modes:
                self.columns.append(f"{run.label} · {m['mode']}" if self.multi else m["mode"])
                cells.append([cell(m, config) for _, cell in rows])
        self.rows = [(name, [col[i] for col in cells]) for i, (name, _) in enumerate(rows)]

    def text(self) -> str:
        width = max(len(name) for name, _ in self.rows)
        col_w = [max(len(c), *(len(v[i]) for _, v in self.rows)) for i, c in enumerate(self.columns)]
        lines = [" " * width + "  " + "  ".join(c.rjust(w) for c, w in zip(self.columns, col_w))]
        lines += [name.ljust(width) + "  " + "  ".join(v.rjust(w) for v, w in zip(values, col_w))
                  for name, values in self.rows]
        return "\n".join(lines)

    def markdown(self) -> str:
        esc = lambda s: s.replace("|", "\\|")  # noqa: E731
        lines = ["| | " + " | ".join(esc(c) for c in self.columns) + " |",
                 "| --- |" + " ---: |" * len(self.columns)]
        lines += [f"| {name} | " + " | ".join(esc(v) for v in values) + " |"
                  for name, values in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        e = html.escape
        head = "".join(f"<th>{e(c)}</th>" for c in self.columns)
        body = "".join(f"<tr><th>{e(name)}</th>" + "".join(f"<td>{e(v)}</td>" for v in values)
                       + "</tr>" for name, values in self.rows)
        return f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"

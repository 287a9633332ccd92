"""Write a report: the latency CDF (PNG), the comparison table and notes (Markdown and HTML)."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

from ..units import hugepage_label
from .plot import BASELINE_COLOR, CYCLE, MODE_COLORS, Line, anatomy_png, cdf_png
from .runs import Run, label_runs
from .samples import QUERY_SERIES, SERIES
from .tables import Table, poison_ratio
from .workload_rows import workload_line

PLOT = "latency-cdf.png"
ANATOMY_PLOT = "fault-anatomy.png"
QUERY_PLOT = "query-latency-cdf.png"
FAULT_SERIES = tuple(s for s in SERIES if s not in QUERY_SERIES)

_CSS = """body{font:15px/1.5 system-ui,sans-serif;color:#1d2330;max-width:1100px;margin:24px auto;padding:0 16px}
table{border-collapse:collapse;margin:12px 0}th,td{padding:4px 12px;border-bottom:1px solid #e3e6ec}
td{text-align:right;font-variant-numeric:tabular-nums}thead th{text-align:right}tbody th{text-align:left;font-weight:500;white-space:nowrap}
img{max-width:100%;border:1px solid #e3e6ec}.muted{color:#667085}code{background:#f1f3f6;padding:0 3px}"""


@dataclass
class Written:
    markdown: Path
    html: Path
    plot: Path
    table: Table


def render_run(run: Run, out_dir: Path | None = None) -> Written:
    """report.md, report.html and latency-cdf.png for one run, in its directory by default."""
    return _write([run], Path(out_dir or run.path), "report", f"migrator experiment: {run.label}")


def compare(runs: list[Run], out_dir: Path) -> Written:
    """compare.md, compare.html and latency-cdf.png for several runs, in out_dir."""
    label_runs(runs)
    return _write(runs, Path(out_dir), "compare", f"migrator: {len(runs)} runs compared")


def _lines(runs: list[Run], series_set: tuple[str, ...] = FAULT_SERIES) -> list[Line]:
    lines, i = [], 0
    for run in runs:
        base = run.samples.get("baseline", {}).get("query_latency_seconds")
        if base and series_set == QUERY_SERIES:
            mapped = ((run.results.get("baseline") or {}).get("mapping") or {}).get("page_label")
            label = f"baseline: all local on {mapped or '?'} pages"
            lines.append(Line(f"{run.label} · {label}" if len(runs) > 1 else label,
                              BASELINE_COLOR, "query_latency_baseline_seconds", base))
        for m in run.modes:
            mode = m["mode"]
            color = CYCLE[i % len(CYCLE)] if len(runs) > 1 else MODE_COLORS.get(mode, CYCLE[i % len(CYCLE)])
            label = m.get("backing_label", mode)
            if len(runs) > 1:
                label = f"{run.label} · {label}"
            for series in series_set:
                samples = run.samples.get(mode, {}).get(series)
                if samples:
                    lines.append(Line(label, color, series, samples))
            i += 1
    return lines


def _setup(run: Run) -> str:
    c, h = run.results.get("config", {}), run.results.get("host", {})
    hp = hugepage_label(c["hugepage_size"]) if c.get("hugepage_size") else "?"
    hgm = h.get("hgm_detection", {})
    return (f"{c.get('memory', '?')} guest on {hp} huge pages, {c.get('pattern')} accesses, "
            f"{c.get('vcpus')} vCPUs x {c.get('accesses_per_vcpu')}, write ratio "
            f"{c.get('write_ratio')}, seed {c.get('seed')}; kernel {h.get('kernel', '?')}, "
            f"{h.get('cores', '?')} cores, HGM {'present' if h.get('hgm') else 'absent'}"
            + (f" ({hgm['detail']})" if hgm.get("detail") else ""))


def _notes(runs: list[Run]) -> list[str]:
    notes = []
    if any(m.get("backing") == "shmem-emulated-hgm" for r in runs for m in r.modes):
        notes.append("`hgm` ran emulated on shmem (4 KiB pages, the same fault path): this kernel "
                     "has no HugeTLB high-granularity mapping.")
    if any(not r.samples.get(m["mode"], {}).get("fault_latency_seconds")
           for r in runs for m in r.modes):
        notes.append("Some modes have no raw fault latencies (no samples-<mode>.json, an older "
                     "run): their CDF lines are missing; the table still holds their summaries.")
    if not any(r.samples.get(m["mode"], {}).get("vcpu_stall_seconds")
               for r in runs for m in r.modes):
        notes.append("The plot shows fault resolution latency as the destination measured it; "
                     "vCPU stalls appear in the table as the guest summarized them.")
    notes += [f"{r.label}: {s}" if len(runs) > 1 else s[0].upper() + s[1:] + "."
              for r in runs if (s := poison_ratio(r.results))]
    notes += [f"{r.label}: {s}" if len(runs) > 1 else s[0].upper() + s[1:] + "."
              for r in runs if (s := workload_line(r.results))]
    if any((m.get("after_migration") or {}).get("vs_1g") is not None for r in runs
           for m in r.modes):
        notes.append("The rate after the migration (random loads, or the workload's queries "
                     "as fast as one thread runs them) is relative to the same guest run "
                     "without a migration on 1 GiB-mapped memory (the baseline; 2 MiB where "
                     "no 1 GiB page could be had): it is what the mode's mappings cost once "
                     "memory has arrived. Real HGM would collapse the 4 KiB mappings back to "
                     "1 GiB (`MADV_COLLAPSE` on hugetlb) after the migration; the emulation "
                     "on shmem cannot, so `hgm` here pays 4 KiB mappings for good. `thp` "
                     "collapses to 2 MiB for real; `hugepage` maps whole huge pages from the "
                     "start.")
    if any(m.get("workload") for r in runs for m in r.modes):
        notes.append("SQLite queries' latency counts from when each was due (open loop), so "
                     "a query stuck on a fault delays the ones behind it visibly; `vCPU "
                     "stall` for this workload is each query's time off the CPU (faults, "
                     "and preemption on a busy host), since SQLite's own loads cannot be "
                     "timed one by one.")
    if any(m.get("faults") and not (m.get("fault_stages") or {}).get("median_fault")
           for r in runs for m in r.modes):
        notes.append("A mode without a fault anatomy had no fault of its own to time: its faults "
                     "waited on the background pull's install of their granule (`faults waited "
                     "on background`), or the guest reported no stalls it could time one by "
                     "one (a real workload's faults happen inside its queries).")
    bad = [f"{r.label} · {m['mode']}" for r in runs for m in r.modes
           if m.get("phase") != "complete" or m.get("mismatched_pages")]
    if bad:
        notes.append(f"**Not clean:** {', '.join(bad)} did not complete with every page verified.")
    return notes


def _write(runs: list[Run], out: Path, base: str, title: str) -> Written:
    out.mkdir(parents=True, exist_ok=True)
    table = Table(runs)
    plot_title = (f"Fault latency, {runs[0].results.get('config', {}).get('memory', '')} guest"
                  if len(runs) == 1 else f"Fault latency, {len(runs)} runs")
    plot = cdf_png(_lines(runs), plot_title, out / PLOT)
    bars = [(f"{r.label} · {m['mode']}" if len(runs) > 1 else m["mode"],
             m["fault_stages"]["median_fault"])
            for r in runs for m in r.modes if (m.get("fault_stages") or {}).get("median_fault")]
    anatomy = [(ANATOMY_PLOT, "where the median fault's stall goes, stage by stage")] if bars else []
    if bars:
        anatomy_png(bars, out / ANATOMY_PLOT)
    query_lines = _lines(runs, QUERY_SERIES)
    if query_lines:
        cdf_png(query_lines, "Query latency (open loop, from when each query was due)",
                out / QUERY_PLOT)
        anatomy.insert(0, (QUERY_PLOT, "query latency CDF: during postcopy, after it, and "
                                       "the baseline with all memory local"))
    setups = [(r.label, _setup(r)) for r in runs]
    notes = _notes(runs)

    md = [f"# {title}", ""]
    md += [f"- **{label}**: {s}" if len(runs) > 1 else s for label, s in setups]
    md += ["", f"![fault latency CDF, both modes on one log-scale axis]({PLOT})", ""]
    md += [f"![{alt}]({name})" for name, alt in anatomy] + ([""] if anatomy else [])
    md += [table.markdown(), ""]
    md += [f"- {n}" for n in notes]
    md_path = out / f"{base}.md"
    md_path.write_text("\n".join(md).rstrip() + "\n")

    e = html.escape
    setup_html = "".join(f"<p class=muted>{e(label + ': ' if len(runs) > 1 else '')}{e(s)}</p>"
                         for label, s in setups)
    notes_html = "".join(f"<li>{_inline(n)}</li>" for n in notes)
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>{setup_html}"
            f"<img src=\"{PLOT}\" alt=\"fault latency CDF\">"
            + "".join(f"<img src=\"{name}\" alt=\"{e(alt)}\">" for name, alt in anatomy)
            + f"{table.html()}"
            f"<ul>{notes_html}</ul></body></html>\n")
    html_path = out / f"{base}.html"
    html_path.write_text(page)
    return Written(md_path, html_path, plot, table)


def _inline(markdown: str) -> str:
    """The little Markdown the notes use (`code`, **bold**) as HTML."""
    text = html.escape(markdown)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)

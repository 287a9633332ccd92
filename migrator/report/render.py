"""Write a report: the latency CDF (PNG), the comparison table and notes (Markdown and HTML)."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

from ..units import hugepage_label
from .plot import CYCLE, MODE_COLORS, Line, anatomy_png, cdf_png
from .runs import Run, label_runs
from .samples import SERIES
from .tables import Table, poison_ratio

PLOT = "latency-cdf.png"
ANATOMY_PLOT = "fault-anatomy.png"

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


def _lines(runs: list[Run]) -> list[Line]:
    lines, i = [], 0
    for run in runs:
        for m in run.modes:
            mode = m["mode"]
            color = CYCLE[i % len(CYCLE)] if len(runs) > 1 else MODE_COLORS.get(mode, CYCLE[i % len(CYCLE)])
            label = m.get("backing_label", mode)
            if len(runs) > 1:
                label = f"{run.label} · {label}"
            for series in SERIES:
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
    if any(not s.get("fault_latency_seconds") for r in runs for s in r.samples.values()):
        notes.append("Some modes have no raw fault latencies (no samples-<mode>.json, an older "
                     "run): their CDF lines are missing; the table still holds their summaries.")
    if not any(s.get("vcpu_stall_seconds") for r in runs for s in r.samples.values()):
        notes.append("The plot shows fault resolution latency as the destination measured it; "
                     "vCPU stalls appear in the table as the guest summarized them.")
    notes += [f"{r.label}: {s}" if len(runs) > 1 else s[0].upper() + s[1:] + "."
              for r in runs if (s := poison_ratio(r.results))]
    if any(m.get("faults") and not (m.get("fault_stages") or {}).get("median_fault")
           for r in runs for m in r.modes):
        notes.append("A mode without a fault anatomy had no fault of its own to time: its faults "
                     "waited on the background pull's install of their granule (`faults waited "
                     "on background`), or the guest reported no stalls.")
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

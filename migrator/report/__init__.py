"""Reports of experiment runs: latency CDF plots, the comparison table (Markdown, HTML, text).

    from migrator.report import load_run, render_run, compare
    run = load_run("results/latest")       # results.json and samples-<mode>.json
    render_run(run)                        # report.md, report.html, latency-cdf.png beside them
"""

from .render import compare, render_run
from .runs import Run, label_runs, load_run
from .samples import read_samples, write_samples
from .tables import Table, poison_ratio, stall_ratio

__all__ = ["Run", "Table", "compare", "label_runs", "load_run", "poison_ratio", "read_samples", "stall_ratio",
           "render_run", "write_samples"]

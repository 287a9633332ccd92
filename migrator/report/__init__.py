"""Reports of experiment runs: latency CDF plots, comparison tables (Markdown, HTML, text).

    from migrator.report import load_run, render_run, compare
    run = load_run("results/latest")       # results.json and samples-<mode>.json
    render_run(run)                        # report.md, report.html, latency-cdf.png beside them
"""

from .render import compare, render_run
from .runs import Run, load_run
from .samples import read_samples, samples_path, write_samples

__all__ = ["Run", "compare", "load_run", "read_samples", "render_run", "samples_path",
           "write_samples"]

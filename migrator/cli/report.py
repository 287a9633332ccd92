"""`migrator report`: re-render earlier experiment runs and compare them."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("report", help="re-render experiment results and compare runs",
                       description="Re-render each run's report.md, report.html and "
                                   "latency-cdf.png in its directory; with several runs, also "
                                   "print one table with a column per run and mode.")
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR",
                   help="an experiment's --out directory (holding results.json), or a sweep's "
                        "(holding sweep.json): sweeps are compared point by point")
    p.add_argument("--out", type=Path,
                   help="also write compare.md, compare.html and latency-cdf.png here "
                        "(default with several DIRs: print the table only)")
    p.add_argument("--json", action="store_true",
                   help="print the comparison table as JSON, nothing else")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..report import Table, compare, label_runs, load_run, render_run

    sweeps = [d for d in args.dirs if (d / "sweep.json").exists()]
    if sweeps:
        return _sweeps(args, sweeps)

    runs = [load_run(d) for d in args.dirs]
    label_runs(runs)
    written = [render_run(r) for r in runs]
    combined = compare(runs, args.out) if args.out else None
    table = combined.table if combined else (written[0].table if len(runs) == 1 else Table(runs))
    if args.json:
        json.dump({"columns": table.columns, "rows": dict(table.rows)}, sys.stdout, indent=2)
        print()
        return 0
    print(table.text())
    print()
    for r, w in zip(runs, written):
        print(f"{r.label}: {w.html} ({w.markdown.name}, {w.plot.name})")
    if combined:
        print(f"comparison: {combined.html} ({combined.markdown.name}, {combined.plot.name})")
    return 0


def _sweeps(args, sweeps: list[Path]) -> int:
    from ..errors import MigratorError
    from ..sweep import compare

    if len(sweeps) != len(args.dirs):
        raise MigratorError("give only sweeps (directories with sweep.json) or only experiment "
                            "runs, not both")
    result = compare.compare(sweeps)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print(compare.text(result))
    return 0

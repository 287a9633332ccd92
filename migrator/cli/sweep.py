"""`migrator sweep SPEC`: run a grid of experiments into one results tree, resumably."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MigratorError


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run a grid of experiments (links, sizes, vCPUs, patterns, "
                                     "modes) into one results tree",
                       description="Run every point of a TOML or YAML grid as `migrator "
                                   "experiment` (on two hosts where the point has a link) into "
                                   "OUT; rerun the same command to resume after an interruption "
                                   "(complete points are skipped). Writes summary.md and "
                                   "plot-<variable>.png into OUT.")
    p.add_argument("spec", type=Path, metavar="SPEC", help="the grid (.toml, .yaml or .json)")
    p.add_argument("--out", type=Path, help="results tree (default results/sweep-<spec name>)")
    p.add_argument("--index", type=int, action="append",
                   help="run only this point (repeatable; default $JOB_COMPLETION_INDEX when "
                        "set, as in a Kubernetes Indexed Job, else every point)")
    p.add_argument("--list", action="store_true", help="print the points and exit")
    p.add_argument("--summary-only", action="store_true",
                   help="run nothing: write the table and plots of what OUT holds")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..sweep import load, runner, summary

    spec = load(args.spec)
    out = args.out or Path("results") / f"sweep-{spec.name}"
    if args.list:
        for point in spec.points():
            print(f"{point.index:4d}  {point.slug}")
        return 0
    indices = args.index
    if indices is None and os.environ.get("JOB_COMPLETION_INDEX", "").strip():
        try:
            indices = [int(os.environ["JOB_COMPLETION_INDEX"])]
        except ValueError:
            raise MigratorError(f"JOB_COMPLETION_INDEX={os.environ['JOB_COMPLETION_INDEX']!r} "
                                f"is not a whole number") from None
    counts = {"failed": 0}
    if not args.summary_only:
        counts = runner.run(spec, out, indices)
    written = summary.write(out)
    sweep, rows = summary.load_tree(out)
    print(summary.text(sweep, rows))
    print(f"\n{written['complete']} of {written['expected']} repetitions complete; table: "
          f"{written['table']}" + "".join(f"\nplot: {p}" for p in written["plots"]))
    return 1 if counts["failed"] else 0

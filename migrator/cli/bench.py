"""`migrator bench [--quick] [--json] [--check] [--out DIR]`: each figure ÷ its reference program,
measured in the same run.

Exit status: 0; 2 when a figure was refused (a migration behind it did not complete verified,
or a reference program failed); with --check, 1 when a goal was missed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure P1..P5 and STALL_RATIO against reference programs "
                       "run in the same run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a 1 GiB image and fewer accesses")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    p.add_argument("--out", type=Path, default=Path("results/bench"),
                   help="where bench.json, the logs and the experiments go (default results/bench)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..bench import render
    from ..bench.measure import Plan, measure

    say = ((lambda *_: None) if args.json else
           (lambda text: print(text, file=sys.stderr, flush=True)))
    result = measure(Plan.make(args.quick), args.out, say)
    (args.out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print(render.text(result))
    return render.exit_status(result, args.check)

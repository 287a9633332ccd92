"""`migrator bench [--quick] [--json]`: P1..P5 as ratios against floors measured in this run."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure P1..P5 against floors measured in the same run")
    p.add_argument("--quick", action="store_true", help="smaller image and fewer accesses")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", type=Path, default=Path("results/bench"))
    p.set_defaults(func=run)


def run(args) -> int:
    from ..bench.measure import measure

    args.out.mkdir(parents=True, exist_ok=True)
    result = measure(quick=args.quick, log_dir=args.out,
                     say=(lambda *_: None) if args.json else
                     (lambda text: print(text, file=sys.stderr, flush=True)))
    (args.out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        for key in ("P1_p50", "P1_p99", "P2", "P3", "P4", "P5"):
            goal = result["goals"][key]
            print(f"{key:7} {result[key]:8.3f}   goal {goal}")
    return 0

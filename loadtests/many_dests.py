"""Many destinations migrating from one source at once, one guest each.

    python -m loadtests.many_dests --dests 8 --vcpus 2 --memory 256MiB --out results/load/dests

One source serves N concurrent migrations (each destination pulls the whole image in the
background and faults pages urgently): something CRIU's page server, one client at a time, does
not do. Destination i runs mode i mod len(--modes), its guest pattern i mod len(--patterns).
Every migration is verified. Writes summary.json and summary.txt.
"""

from __future__ import annotations

import sys

from .scenario import GuestPlan, Layout, main as scenario_main


def layout(args, modes: list[str], patterns: list[str]) -> Layout:
    dests = [(f"dest-{i}-{modes[i % len(modes)]}", modes[i % len(modes)])
             for i in range(args.dests)]
    guests = [GuestPlan(f"guest-{i}", i, patterns[i % len(patterns)], args.seed + i)
              for i in range(args.dests)]
    return Layout(f"{args.dests} destinations ({', '.join(modes)} alternating) migrating from "
                  f"one source at once, one guest of {args.vcpus} vCPUs each", dests, guests)


def _extra(p) -> None:
    p.add_argument("--dests", type=int, default=8, help="destinations at once (default 8)")


def main(argv: list[str] | None = None) -> int:
    return scenario_main("many-dests", layout, argv, __doc__, _extra)


if __name__ == "__main__":
    sys.exit(main())

"""Many synthetic guests against one destination per mode, at once.

    python -m loadtests.many_guests --guests 8 --vcpus 4 --memory 256MiB --out results/load/guests

Guest i goes to the destination of mode i mod len(--modes) and runs pattern i mod
len(--patterns), so modes and patterns are mixed. Every migration is verified (all pages by the
destination, a sample and every write by the guest). Writes summary.json and summary.txt.
"""

from __future__ import annotations

import sys

from .scenario import GuestPlan, Layout, main as scenario_main


def layout(args, modes: list[str], patterns: list[str]) -> Layout:
    dests = [(f"dest-{mode}", mode) for mode in modes]
    guests = [GuestPlan(f"guest-{i}", i % len(modes), patterns[i % len(patterns)], args.seed + i)
              for i in range(args.guests)]
    return Layout(f"{args.guests} guests x {args.vcpus} vCPUs on one destination per mode "
                  f"({', '.join(modes)}), patterns {', '.join(patterns)}", dests, guests)


def _extra(p) -> None:
    p.add_argument("--guests", type=int, default=8, help="guests at once (default 8)")


def main(argv: list[str] | None = None) -> int:
    return scenario_main("many-guests", layout, argv, __doc__, _extra)


if __name__ == "__main__":
    sys.exit(main())

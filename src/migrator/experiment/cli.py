"""`migrator experiment`: compare hgm and hugepage on one host, on loopback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..guest.patterns import PATTERNS
from ..units import parse_size


def register(sub) -> None:
    p = sub.add_parser("experiment", help="migrate the same guest in each mode and compare")
    p.add_argument("--memory", type=parse_size, default=parse_size("2GiB"))
    p.add_argument("--hugepage-size", type=parse_size, default=parse_size("1G"), metavar="1G|2M")
    p.add_argument("--modes", default="hgm,hugepage")
    p.add_argument("--pattern", choices=PATTERNS, default="zipf")
    p.add_argument("--vcpus", type=int, default=4)
    p.add_argument("--accesses", type=int, default=5000, help="accesses per vCPU")
    p.add_argument("--write-ratio", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, default=Path("results/latest"))
    p.add_argument("--json", action="store_true", help="print results.json to stdout, no progress")
    p.set_defaults(func=run)


def run(args) -> int:
    from .runner import Plan, run as run_plan
    from .table import comparison

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("hgm", "hugepage")]
    if bad or not modes:
        raise SystemExit(f"--modes {args.modes!r}: use a comma-separated subset of hgm,hugepage")
    if args.hugepage_size not in (2 << 20, 1 << 30):
        raise SystemExit("--hugepage-size must be 2M or 1G")
    if args.memory % (2 << 20) or args.memory <= 0:
        raise SystemExit("--memory must be a positive multiple of 2 MiB")
    hp = args.hugepage_size
    if args.memory % hp:
        print(f"--memory is not a multiple of {hp >> 20} MiB; using 2 MiB huge pages", file=sys.stderr)
        hp = 2 << 20
    plan = Plan(args.memory, hp, modes, args.pattern, args.vcpus, args.accesses,
                args.write_ratio, args.seed, args.out, quiet=args.json)
    results = run_plan(plan)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print(comparison(results))
        print(f"\nresults: {args.out / 'results.json'}")
        print(f"report:  {args.out / 'report.html'} (report.md, latency-cdf.png)")
    ok = all(m["phase"] == "complete" and m["mismatched_pages"] == 0 for m in results["modes"])
    return 0 if ok else 1

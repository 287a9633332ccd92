"""`migrator experiment`: compare hgm, hugepage and thp on one host, on loopback or on two hosts
made of network namespaces with a shaped link (--two-host)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..dest.backing import MODES
from ..errors import MigratorError
from ..units import parse_size
from . import options


def register(sub) -> None:
    p = sub.add_parser("experiment", help="migrate the same guest in each mode and compare")
    p.add_argument("--memory", type=options.size, default=parse_size("2GiB"),
                   help="guest memory, a multiple of 2 MiB (default 2GiB)")
    options.add_hugepage_size(p, "1G")
    p.add_argument("--modes", default=None,
                   help="comma-separated subset of hgm,hugepage,thp (default: all three; thp "
                        "only where `host check` finds it can run)")
    options.add_workload(p, accesses=5000, seed=42)
    options.add_real_workload(p)
    p.add_argument("--database", type=Path, metavar="FILE",
                   help="with --workload sqlite: this database (from `migrator workload "
                        "build-sqlite --size` the --memory) instead of building one for the run")
    p.add_argument("--out", type=Path, default=Path("results/latest"))
    p.add_argument("--json", action="store_true", help="print results.json to stdout, no progress")
    options.add_poison(p, "on the source, and compare how much memory each mode loses")
    options.add_corruption(p)
    options.add_background_policy(p)
    two = p.add_argument_group(
        "two hosts", "run the source and the destinations in two network namespaces joined by "
        "a veth pair shaped with tc; the link is measured first and recorded in results.json")
    two.add_argument("--two-host", action="store_true", help="run on two hosts (needs root)")
    two.add_argument("--bandwidth", metavar="RATE",
                     help=f"each direction, e.g. 10gbit, 200mbit (default {_LINK_DEFAULTS[0]}; "
                          f"0: unshaped)")
    two.add_argument("--rtt", metavar="TIME",
                     help=f"round-trip time of the link, e.g. 100us, 2ms (default "
                          f"{_LINK_DEFAULTS[1]}): netem where the kernel has it, else a delaying "
                          f"relay in front of the source")
    two.add_argument("--loss", metavar="FRACTION",
                     help="packet loss each direction, e.g. 0.001 or 0.1%% (default 0): netem, "
                          "else a cls_bpf random drop")
    p.set_defaults(func=run)


_LINK_DEFAULTS = ("10gbit", "100us", "0")


def _link_spec(args):
    given = [f"--{n}" for n in ("bandwidth", "rtt", "loss") if getattr(args, n) is not None]
    if not args.two_host:
        if given:
            raise MigratorError(f"{' '.join(given)}: the link is shaped only with --two-host")
        return None
    from ..netns import LinkSpec

    values = [v if v is not None else d
              for v, d in zip((args.bandwidth, args.rtt, args.loss), _LINK_DEFAULTS)]
    try:
        return LinkSpec.parse(*values)
    except ValueError as e:
        raise MigratorError(str(e)) from None


def _default_modes() -> str:
    """hgm,hugepage, and thp where this host can run it (saying why not, where not)."""
    from ..host import thp

    why = thp.why_not_for_run()
    if why:
        print("thp mode left out: " + "; ".join(why), file=sys.stderr)
        return "hgm,hugepage"
    return "hgm,hugepage,thp"


def run(args) -> int:
    from ..experiment.runner import Plan, run as run_plan
    from ..report import Run, Table, poison_ratio, stall_ratio
    from ..report.workload_rows import workload_line

    if args.modes is None:
        args.modes = _default_modes()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise MigratorError(f"--modes {args.modes!r}: use a comma-separated subset of "
                            f"{','.join(MODES)}")
    if args.memory % (2 << 20) or args.memory <= 0:
        raise MigratorError("--memory must be a positive multiple of 2 MiB")
    hp = args.hugepage_size
    if args.memory % hp:
        print(f"--memory is not a multiple of {hp >> 20} MiB; using 2 MiB huge pages", file=sys.stderr)
        hp = 2 << 20
    plan = Plan(args.memory, hp, modes, args.pattern, args.vcpus, args.accesses,
                args.write_ratio, args.seed, args.out, link=_link_spec(args), quiet=args.json,
                poison_rate=args.poison, poison_pages=args.poison_pages,
                policy=options.background_policy(args),
                corruption_rate=args.inject_corruption,
                corruption_pages=args.inject_corruption_pages,
                workload=options.real_workload(args), after=args.after, database=args.database)
    if args.database and plan.workload is None:
        raise MigratorError("--database is the sqlite workload's: add --workload sqlite")
    if args.database:
        size = args.database.stat().st_size if args.database.is_file() else None
        if size != args.memory:
            raise MigratorError(f"--database {args.database} is "
                                f"{'not a file' if size is None else f'{size} bytes'}, not "
                                f"--memory {args.memory} bytes: build one with `migrator "
                                f"workload build-sqlite --size {args.memory} --out FILE`")
    if plan.workload is not None and (args.poison or args.poison_pages):
        raise MigratorError("--poison with --workload sqlite: a query reading poisoned memory "
                            "gets SIGBUS inside SQLite, which cannot go on after it; inject "
                            "memory errors with a --pattern guest")
    results = run_plan(plan)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print(Table([Run(args.out, results)]).text())
        if stall_ratio(results):
            print(f"\n{stall_ratio(results)}")
        if poison_ratio(results):
            print(f"\n{poison_ratio(results)}")
        if workload_line(results):
            print(f"\n{workload_line(results)}")
        if "link" in results:
            from ..experiment.two_host import link_summary

            print(f"\n{link_summary(results['link'])}")
        print(f"\nresults: {args.out / 'results.json'}")
        print(f"report:  {args.out / 'report.html'} (report.md, latency-cdf.png)")
    failed = [(m["mode"], m["problems"]) for m in results["modes"] if m.get("problems")]
    for mode, found in failed:
        print(f"NOT VERIFIED: {mode}: {'; '.join(found)}", file=sys.stderr)
    return 1 if failed else 0

"""What both scenarios share: their command line, the run (bounded in time and count), the
summary. A scenario only says which destinations exist and which guest goes where."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from migrator.cli import options
from migrator.errors import MigratorError
from migrator.guest.patterns import PATTERNS
from migrator.host import pools
from migrator.units import format_size, hugepage_label, parse_size

from . import summary
from .fleet import Fleet
from .sampler import Sampler

BASE_PATTERNS = ("sequential", "uniform", "zipf", "hotset")


@dataclass(frozen=True)
class GuestPlan:
    name: str
    dest: int  # index into the scenario's destinations
    pattern: str
    seed: int


@dataclass(frozen=True)
class Layout:
    description: str
    dests: list[tuple[str, str]]  # (name, mode)
    guests: list[GuestPlan]


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--memory", type=options.size, default=parse_size("512MiB"),
                   help="guest image size, a multiple of 2 MiB (default 512MiB)")
    options.add_hugepage_size(p, "2M")
    p.add_argument("--modes", default="hgm,hugepage", help="modes to mix (default hgm,hugepage)")
    p.add_argument("--patterns", default=",".join(BASE_PATTERNS),
                   help=f"access patterns to mix, of {', '.join(PATTERNS)}")
    p.add_argument("--vcpus", type=int, default=4, help="vCPUs per guest (default 4)")
    p.add_argument("--accesses", type=int, default=5000, help="accesses per vCPU (default 5000)")
    p.add_argument("--write-ratio", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--time-limit", type=float, default=600.0, metavar="SECONDS",
                   help="the whole scenario stops by then; late guests are killed and count as "
                        "errors (default 600)")
    p.add_argument("--out", type=Path, required=True, help="directory for summary.json, logs")
    p.add_argument("--two-host", action="store_true",
                   help="source in one network namespace, destinations and guests in another")
    p.add_argument("--bandwidth", default="10gbit")
    p.add_argument("--rtt", default="100us")
    p.add_argument("--loss", default="0")
    return p


def check(p: argparse.ArgumentParser, args) -> tuple[list[str], list[str]]:
    modes = [m for m in args.modes.split(",") if m]
    patterns = [x for x in args.patterns.split(",") if x]
    if not modes or set(modes) - {"hgm", "hugepage"}:
        p.error("--modes: a comma-separated subset of hgm,hugepage")
    if not patterns or set(patterns) - set(PATTERNS):
        p.error(f"--patterns: a comma-separated subset of {','.join(PATTERNS)}")
    if args.memory % args.hugepage_size:
        p.error("--memory must be a multiple of --hugepage-size")
    if args.vcpus < 1 or args.accesses < 1 or args.time_limit <= 0:
        p.error("--vcpus, --accesses and --time-limit must be positive")
    return modes, patterns


def run(scenario: str, args, layout: Layout, say: Callable[[str], None]) -> dict:
    """Run layout, bounded by args.time_limit; returns the summary (also written to args.out)."""
    began = time.monotonic()
    deadline = began + args.time_limit
    link = None
    if args.two_host:
        from migrator.netns import LinkSpec

        link = LinkSpec.parse(args.bandwidth, args.rtt, args.loss)
    config = {"description": layout.description, "memory_bytes": args.memory,
              "memory": format_size(args.memory),
              "hugepage_size": hugepage_label(args.hugepage_size), "guests": len(layout.guests),
              "dests": [{"name": n, "mode": m} for n, m in layout.dests],
              "vcpus_per_guest": args.vcpus, "accesses_per_vcpu": args.accesses,
              "write_ratio": args.write_ratio, "time_limit_seconds": args.time_limit,
              "two_host": bool(link)}
    modes = dict(layout.dests)
    hugepage_guests = sum(1 for g in layout.guests if modes[layout.dests[g.dest][0]] == "hugepage")
    # each hugepage guest holds a whole image of huge pages; each destination probes HGM with one
    need = hugepage_guests * (args.memory // args.hugepage_size) + len(layout.dests)
    errors: list[str] = []
    with pools.reserved(args.hugepage_size, need) as got:
        if got < need:
            raise MigratorError(f"only {got} of the {need} {hugepage_label(args.hugepage_size)} "
                                f"huge pages the hugepage-mode guests need could be reserved")
        with Fleet(args.out, link=link, say=say) as fleet:
            say(f"{scenario}: {layout.description}")
            source = fleet.source(args.memory, args.seed)
            dests = [fleet.dest(name, mode, args.hugepage_size) for name, mode in layout.dests]
            fleet.wait_healthy()
            pids = {"source": source.process.pid, **{d.name: d.process.pid for d in dests}}
            if "relay" in fleet.hosts.helper_pids:  # two hosts: the delay costs CPU too
                pids["relay"] = fleet.hosts.helper_pids["relay"]
            sampler = Sampler(pids).start()
            say(f"source and {len(dests)} destinations up; starting {len(layout.guests)} guests")
            for g in layout.guests:
                fleet.guest(g.name, dests[g.dest], args.vcpus, g.pattern, args.accesses,
                            args.write_ratio, g.seed)
            fleet.wait(deadline)
            processes = sampler.stop()
            collected = [fleet.collect(g) for g in fleet.guests]
            records = [c[0] for c in collected]
            raw = [c[1] for c in collected]
            for d in dests:
                if d.process.poll() is not None:
                    errors.append(f"{d.name} exited with {d.process.returncode}: "
                                  f"{d.process.tail(5)}")
            result = summary.build(scenario, config, fleet.guests, records, raw, processes,
                                   time.monotonic() - began, fleet.link, errors)
    say(summary.write(result, args.out))
    say(f"\nsummary: {args.out / 'summary.json'}")
    return result


def main(scenario: str, build_layout, argv: list[str] | None, doc: str, extra=None) -> int:
    p = parser(f"python -m loadtests.{scenario.replace('-', '_')}", doc)
    if extra:
        extra(p)
    args = p.parse_args(argv)
    modes, patterns = check(p, args)
    layout = build_layout(args, modes, patterns)
    try:
        result = run(scenario, args, layout, say=lambda text: print(text, flush=True))
    except MigratorError as e:
        print(f"{scenario}: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print(f"{scenario}: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    return 0 if result["ok"] else 1

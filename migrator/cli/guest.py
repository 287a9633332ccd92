"""`migrator guest`: a synthetic guest (VMM process) against a destination."""

from __future__ import annotations

import json
import sys

from ..errors import MigratorError
from . import options


def register(sub) -> None:
    p = sub.add_parser("guest", help="run a synthetic guest whose vCPUs fault on migrating memory")
    p.add_argument("--dest-socket", metavar="PATH",
                   help="the destination's guest socket (required but with --baseline)")
    options.add_workload(p, accesses=20000, seed=1)
    options.add_real_workload(p)
    p.add_argument("--baseline", action="store_true",
                   help="no migration: all memory local from the start, on 1 GiB pages where "
                        "the pool has them (else 2 MiB, else 4 KiB); measures what the guest "
                        "does without postcopy (the sqlite workload's latency, the access or "
                        "query rate)")
    p.add_argument("--image", metavar="FILE",
                   help="with --baseline: the guest image to load (the SQLite database)")
    p.add_argument("--memory", type=options.size, metavar="SIZE",
                   help="with --baseline and no --image: the size of guest memory")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--record", metavar="FILE",
                   help="write the vCPUs' access sequences and the stalls they saw to FILE")
    p.add_argument("--replay", metavar="FILE",
                   help="replay a recorded trace instead of --pattern (one vCPU per recorded "
                        "vCPU; --vcpus, --accesses and --write-ratio come from the trace)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..guest.main import run_guest

    workload = options.real_workload(args)
    if args.baseline:
        return _baseline(args, workload)
    if not args.dest_socket:
        raise MigratorError("--dest-socket is required (or --baseline, to run without a "
                            "migration)")
    if workload is not None:
        if args.replay:
            raise MigratorError("--replay replays a trace of page accesses: drop --workload "
                                "sqlite (record one with --workload sqlite --record FILE)")
        from ..guest.sqlite_main import run_sqlite_guest

        result = run_sqlite_guest(args.dest_socket, args.vcpus, workload, args.after,
                                  record=args.record)
    else:
        result = run_guest(args.dest_socket, args.vcpus, args.pattern, args.accesses,
                           args.write_ratio, args.seed, record=args.record, replay=args.replay,
                           after=args.after)
    if args.json:
        json.dump(result, sys.stdout)
        print()
    elif result.get("vcpus_blocked"):
        m = result["migration"]
        print(f"migration {m.get('phase')}: {m.get('error')}; the vCPUs are blocked on faults "
              "nobody will resolve: the guest is lost")
    elif workload is not None:
        _print_workload(result)
    else:
        _print(result)
    ok = (result.get("migration", {}).get("phase") == "complete"
          and result.get("verify", {}).get("mismatched_pages", 1) == 0
          and result["verify"]["writes_lost"] == 0
          and not (result.get("workload") or {}).get("errors"))
    return 0 if ok else 1


def _baseline(args, workload) -> int:
    import os

    from ..guest.sqlite_main import run_baseline

    if workload is not None and not args.image:
        raise MigratorError("--baseline --workload sqlite needs --image FILE (the database "
                            "`migrator workload build-sqlite` wrote)")
    size = os.path.getsize(args.image) if args.image else args.memory
    if not size:
        raise MigratorError("--baseline needs --image FILE or --memory SIZE")
    result = run_baseline(args.image, size, args.vcpus, workload, args.after, args.seed)
    if args.json:
        json.dump(result, sys.stdout)
        print()
    else:
        print(f"local memory on {result['mapping']['page_label']} pages")
        if "workload" in result:
            _print_workload(result)
        a = result["after_migration"]
        print(f"rate: {a.get('queries_per_second') or a.get('accesses_per_second'):.0f}/s")
    return 0


def _print_workload(r: dict) -> None:
    w = r.get("workload") or {}
    ms = lambda s: f"{s * 1e3:9.3f}"  # noqa: E731
    print(f"sqlite: {w.get('vcpus')} vCPUs, {w['queries']['total']} queries "
          f"({', '.join(f'{k} {v}' for k, v in w['queries'].items() if k != 'total')})")
    for phase in ("during", "after"):
        p = w.get(phase) or {}
        if p.get("count"):
            print(f"{phase:>7}: {p['count']:>7} queries  p50 {ms(p['p50'])} ms  p99 "
                  f"{ms(p['p99'])} ms  max {ms(p['max'])} ms")
    rate = (r.get("after_migration") or {}).get("queries_per_second")
    if rate:
        print(f"query rate after: {rate:.0f}/s (one thread, as fast as it goes)")
    if w.get("errors"):
        print("errors: " + "; ".join(w["errors"]))
    m = r.get("migration")
    if m:
        print(f"migration {m.get('phase')}: verified {m.get('verified_pages')} pages, "
              f"{m.get('mismatched_pages')} mismatched")


def _print(r: dict) -> None:
    us = lambda s: f"{s * 1e6:10.1f}"  # noqa: E731  (a column of microseconds, aligned)
    print(f"guest on {r['backing_label']}: {r['vcpus']} vCPUs x {r['accesses_per_vcpu']} "
          f"{r['pattern']} accesses in {r['vcpu_run_seconds']:.2f}s")
    print(f"{'vcpu':>4} {'stalls':>7} {'p50 us':>10} {'p90 us':>10} {'p99 us':>10} "
          f"{'max us':>10} {'total ms':>9}")
    for v in r["per_vcpu"]:
        print(f"{v['vcpu']:>4} {v['count']:>7} {us(v['p50'])} {us(v['p90'])} {us(v['p99'])} "
              f"{us(v['max'])} {v['total'] * 1e3:9.1f}")
    m, ver = r.get("migration", {}), r.get("verify", {})
    print(f"migration {m.get('phase')}: verified {m.get('verified_pages')} pages, "
          f"{m.get('mismatched_pages')} mismatched; guest check: {ver.get('pages_checked')} "
          f"pages checked, {ver.get('mismatched_pages')} mismatched, "
          f"{ver.get('writes_checked')} writes checked, {ver.get('writes_lost')} lost")
    if m.get("error"):
        print(f"migration error: {m['error']}")

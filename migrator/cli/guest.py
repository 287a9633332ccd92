"""`migrator guest`: a synthetic guest (VMM process) against a destination."""

from __future__ import annotations

import json
import sys

from . import options


def register(sub) -> None:
    p = sub.add_parser("guest", help="run a synthetic guest whose vCPUs fault on migrating memory")
    p.add_argument("--dest-socket", required=True, metavar="PATH")
    options.add_workload(p, accesses=20000, seed=1)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--record", metavar="FILE",
                   help="write the vCPUs' access sequences and the stalls they saw to FILE")
    p.add_argument("--replay", metavar="FILE",
                   help="replay a recorded trace instead of --pattern (one vCPU per recorded "
                        "vCPU; --vcpus, --accesses and --write-ratio come from the trace)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..guest.main import run_guest

    result = run_guest(args.dest_socket, args.vcpus, args.pattern, args.accesses,
                       args.write_ratio, args.seed, record=args.record, replay=args.replay)
    if args.json:
        json.dump(result, sys.stdout)
        print()
    elif result.get("vcpus_blocked"):
        m = result["migration"]
        print(f"migration {m.get('phase')}: {m.get('error')}; the vCPUs are blocked on faults "
              "nobody will resolve: the guest is lost")
    else:
        _print(result)
    ok = (result.get("migration", {}).get("phase") == "complete"
          and result.get("verify", {}).get("mismatched_pages", 1) == 0
          and result["verify"]["writes_lost"] == 0)
    return 0 if ok else 1


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

"""`migrator host check | reserve | release`."""

from __future__ import annotations

import argparse
import json
import sys

from cffi_uffd import SIZE_1G, SIZE_2M

from ..host import check, pools, render

_ALL = -1  # `release --1g` without a count: all available pages


def _check(args: argparse.Namespace) -> int:
    found = check.build()
    print(json.dumps(found, indent=2) if args.json else render.check(found))
    return check.exit_code(found)


def _asked(args: argparse.Namespace) -> list[tuple[int, int | None]]:
    return [(size, n) for size, n in ((SIZE_1G, args.pages_1g), (SIZE_2M, args.pages_2m))
            if n is not None]


def _change(args: argparse.Namespace, action) -> int:
    asked = _asked(args)
    if not asked:
        args.parser.error("say which pool: --1g N and/or --2m N")
    results, failed = [], False
    for size, n in asked:
        try:
            results.append(action(size, None if n == _ALL else n))
        except PermissionError as e:
            print(f"migrator host {args.action}: {e}; run it as root", file=sys.stderr)
            return 1
        except ValueError as e:  # the kernel has no pool of that size
            print(f"migrator host {args.action}: {e}", file=sys.stderr)
            failed = True
    print(json.dumps(results, indent=2) if args.json else render.pool_changes(results))
    return 1 if failed or not all(x["ok"] for x in results) else 0


def _count(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError("a page count is 0 or more")
    return n


def register(subparsers) -> None:
    host = subparsers.add_parser("host", help="what this host can do; hugetlb pools",
                                 description=__doc__)
    sub = host.add_subparsers(dest="action", required=True, metavar="ACTION")

    checking = sub.add_parser("check", help="kernel, userfaultfd, features, pools, HGM, modes",
                              description="Print what this host can do. Exit 0: ready; "
                              "1: userfaultfd cannot be used (the fix is printed); "
                              "2: userfaultfd works but neither mode can run.")
    checking.add_argument("--json", action="store_true", help="the check as JSON (see README)")
    checking.set_defaults(func=_check)

    reserve = sub.add_parser("reserve", help="grow hugetlb pools to at least N available pages",
                             description="Grow each named pool until at least N pages are "
                             "available (free and not claimed by a mapping); never shrinks. "
                             "Reports what the kernel gave; exit 1 if a pool got none.")
    reserve.add_argument("--1g", dest="pages_1g", type=_count, metavar="N",
                         help="1 GiB pages wanted available")
    reserve.add_argument("--2m", dest="pages_2m", type=_count, metavar="N",
                         help="2 MiB pages wanted available")
    reserve.add_argument("--json", action="store_true")
    reserve.set_defaults(func=lambda a: _change(a, pools.reserve), parser=reserve)

    release = sub.add_parser("release", help="give hugetlb pages back to the kernel",
                             description="Give back N available pages of each named pool, or "
                             "all available ones when N is left out. Pages in use stay.")
    release.add_argument("--1g", dest="pages_1g", type=_count, nargs="?", const=_ALL,
                         metavar="N", help="1 GiB pages to give back (default: all available)")
    release.add_argument("--2m", dest="pages_2m", type=_count, nargs="?", const=_ALL,
                         metavar="N", help="2 MiB pages to give back (default: all available)")
    release.add_argument("--json", action="store_true")
    release.set_defaults(func=lambda a: _change(a, pools.release), parser=release)

"""`migrator workload`: build what a real workload's guest runs over (a SQLite database)."""

from __future__ import annotations

import json
import sys
import time

from ..errors import MigratorError
from ..units import format_size
from . import options


def register(sub) -> None:
    p = sub.add_parser("workload", help="build a real workload's guest image")
    what = p.add_subparsers(dest="workload", required=True, metavar="WHAT")
    b = what.add_parser("build-sqlite",
                        help="write a deterministic SQLite database (orders, customers, items "
                             "with indexes) of exactly SIZE bytes, to serve with "
                             "`migrator source --image FILE` and query with "
                             "`migrator guest --workload sqlite`")
    b.add_argument("--size", type=options.size, required=True,
                   help="bytes of the file, a multiple of 2 MiB, e.g. 2GiB")
    b.add_argument("--out", required=True, metavar="FILE")
    b.add_argument("--json", action="store_true", help="print what was built as JSON")
    b.set_defaults(func=build_sqlite)


def build_sqlite(args) -> int:
    from ..workload import database

    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        if not args.json and sys.stderr.isatty():
            print(f"\r{format_size(done)} of {format_size(total)}", end="", file=sys.stderr,
                  flush=True)

    try:
        built = database.build(args.size, args.out, progress)
    except (ValueError, OSError) as e:
        raise MigratorError(str(e)) from e
    built["seconds"] = time.monotonic() - started
    if args.json:
        json.dump(built, sys.stdout)
        print()
    else:
        print(f"{chr(13) if sys.stderr.isatty() else ''}{built['path']}: {format_size(built['size'])}, {built['orders']} orders, "
              f"{built['customers']} customers, {built['items']} items (SQLite "
              f"{built['sqlite']}, {format_size(built['database_bytes'])} of pages) in "
              f"{built['seconds']:.1f}s", file=sys.stderr)
    return 0

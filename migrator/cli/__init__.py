"""The `migrator` command: one module per subcommand, the options they share in options.py.

Library code raises MigratorError for a failure a person can act on; here it becomes a message
on stderr ("migrator COMMAND: what went wrong and what to do") and the exit status.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import MigratorError
from . import bench, dest, experiment, guest, host, model, report, source, sweep, workload

# Each module has register(subparsers); the parser it adds sets func(args) -> exit status.
_COMMANDS = (host, source, dest, guest, experiment, sweep, model, report, bench, workload)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="migrator", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MigratorError as e:
        print(f"migrator {args.command}: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        return 130

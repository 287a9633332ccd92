"""The `migrator` command: each subcommand lives with the part it drives."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module exposes register(subparsers); the parser it adds sets func(args) -> int.
_COMMANDS = [
    "migrator.host.cli",
    "migrator.source.cli",
    "migrator.dest.cli",
    "migrator.guest.cli",
    "migrator.experiment.cli",
    "migrator.report.cli",
    "migrator.bench.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="migrator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name and not name.startswith(e.name + "."):
                raise
            continue  # a part not built yet
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

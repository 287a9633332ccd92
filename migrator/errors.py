"""The error every layer of migrator raises for a failure a person can act on.

The message says what went wrong and what to do about it; migrator.cli prints it after the
command's name and exits with exit_status. Library code never exits the process itself.
"""

from __future__ import annotations


class MigratorError(Exception):
    exit_status = 1

"""How a migration ends badly."""

from __future__ import annotations


class MigrationFailed(RuntimeError):
    """The migration cannot complete correctly; the message says why, phase names the end."""

    def __init__(self, message: str, phase: str = "failed"):
        super().__init__(message)
        self.phase = phase

"""How long the fuzz tests run: a bounded budget in CI, a long one for operators.

    MIGRATOR_FUZZ_EXAMPLES=100000 .venv/bin/pytest tests/fuzz -q

sets the number of examples of every property test (default: each test's own CI number).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_OVERRIDE = os.environ.get("MIGRATOR_FUZZ_EXAMPLES")


def examples(ci: int) -> int:
    """The number of examples for a test whose CI budget is ci."""
    return int(_OVERRIDE) if _OVERRIDE else ci


def fuzz(ci: int) -> settings:
    """Settings for a property test: no deadline (a loaded CI machine is slow, and a real
    daemon's answer takes what it takes), and fixtures shared between examples are fine (the
    daemons live for the whole module on purpose)."""
    return settings(max_examples=examples(ci), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])

"""Children that a test interrupts with SIGINT, however the suite was started: a shell starts
a background job with SIGINT ignored, children inherit that, and a Python started with SIGINT
ignored installs no KeyboardInterrupt handler, so the signal would do nothing."""

from __future__ import annotations

import signal


def sigint_default() -> None:
    """preexec_fn: SIGINT back to its default in the child, before it executes."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)

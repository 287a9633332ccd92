"""Progress of long work on a terminal: one line rewritten in place, or sparse lines in a log.

    p = Progress(quiet=args.json)
    p.update("[hgm] 1200/65536 pages present")   # rewrites the line on a terminal
    p.say("[hgm] complete")                      # a line that stays

Quiet prints nothing at all, so `--json` output stays the only thing a run writes.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

LOG_EVERY_S = 5.0  # not a terminal (CI, a log file): an update at most this often


class Progress:
    def __init__(self, quiet: bool = False, stream: TextIO | None = None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._open = False  # a rewritable line is on the screen
        self._last_logged = 0.0

    def say(self, text: str) -> None:
        if self.quiet:
            return
        self._end_line()
        print(text, file=self.stream, flush=True)

    def update(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty:
            width = shutil.get_terminal_size().columns - 1  # a wrapped line cannot be rewritten
            self.stream.write("\r\x1b[2K" + text[:width])
            self.stream.flush()
            self._open = True
        elif time.monotonic() - self._last_logged >= LOG_EVERY_S:
            self._last_logged = time.monotonic()
            print(text, file=self.stream, flush=True)

    def _end_line(self) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False


def bar(done: int, total: int, width: int = 24) -> str:
    filled = width * done // total if total else 0
    return "[" + "#" * filled + "." * (width - filled) + "]"

"""The guest's answers, checked against the same database read from a local file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .queries import KINDS, answer


def check_answers(database: str | Path, answers: list[list[int]]) -> dict:
    """answers: [kind, parameter, rows, checksum] as the guest got them over migrated memory.
    Each is run again with Python's sqlite3 on the file (read-only) and compared."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        wrong, by_kind = [], {k: 0 for k in KINDS}
        for kind, param, rows, got in answers:
            by_kind[KINDS[kind]] += 1
            if answer(db, kind, param) != (rows, got):
                wrong.append({"kind": KINDS[kind], "param": param})
    finally:
        db.close()
    return {"checked": len(answers), "checked_by_kind": by_kind, "wrong": len(wrong),
            "wrong_first": wrong[:10]}

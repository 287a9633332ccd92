"""The SQLite workload's test database: built once per test process (a few seconds), removed at
exit. 64 MiB: 500k orders, enough for faults all over memory, small enough to migrate fast."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from migrator.workload import database as builder

SIZE = 64 << 20
_built: dict[int, Path] = {}


def database(size: int = SIZE) -> Path:
    if size not in _built:
        directory = Path(tempfile.mkdtemp(prefix="migrator-sqlite-"))
        atexit.register(shutil.rmtree, directory, True)
        _built[size] = Path(builder.build(size, directory / f"guest-{size}.db")["path"])
    return _built[size]

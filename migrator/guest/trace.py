"""Access traces: record what each vCPU touched (and the stalls it saw); replay it as a pattern.

A trace is JSON: {"schema", "pages", "vcpus": [{"pages": [...], "writes": [0/1...],
"latency_ns": [...]}]}, page indices in 4 KiB pages of the guest's memory. Replaying gives
the same accesses in the same order per vCPU, so a real workload's faults can be reproduced
against either mode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import MigratorError

SCHEMA = "migrator/trace/1"


@dataclass
class VcpuTrace:
    pages: list[int]
    writes: bytes


@dataclass
class Recorded:
    """A vCPU's recorded reads (a real workload's: pages only, no writes, no latencies)."""

    pages: list[int]
    writes: bytes = b""
    latency_ns: list[int] | None = None

    def __post_init__(self) -> None:
        self.writes = self.writes or bytes(len(self.pages))


def save(path: str | Path, pages: int, runs: list) -> None:
    """Write the runs' access sequences and the latencies they saw."""
    body = {"schema": SCHEMA, "pages": pages, "vcpus": [
        {"pages": list(r.pages), "writes": list(r.writes),
         "latency_ns": list(r.latency_ns) if r.latency_ns is not None else None}
        for r in runs]}
    Path(path).write_text(json.dumps(body, separators=(",", ":")) + "\n")


def load(path: str | Path, pages: int) -> list[VcpuTrace]:
    """The per-vCPU sequences of a trace, checked against a guest of `pages` pages."""
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise MigratorError(f"cannot read trace {path}: {e}") from e
    if not isinstance(body, dict) or body.get("schema") != SCHEMA:
        raise MigratorError(f"{path} is not a migrator trace (schema {SCHEMA}); record one with "
                         "`migrator guest --record FILE`")
    out = []
    for i, v in enumerate(body.get("vcpus") or []):
        seq, writes = v.get("pages"), v.get("writes")
        if (not isinstance(seq, list) or not isinstance(writes, list) or len(seq) != len(writes)
                or not all(isinstance(p, int) and 0 <= p < pages for p in seq)):
            raise MigratorError(f"{path}: vCPU {i} needs 'pages' (indices below {pages}, this "
                             "guest's size) and as many 'writes'; was it recorded on a larger guest?")
        out.append(VcpuTrace(seq, bytes(1 if w else 0 for w in writes)))
    if not out:
        raise MigratorError(f"{path} holds no vCPU sequences")
    return out

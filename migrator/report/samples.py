"""Raw latency samples of one mode of a run: DIR/samples-<mode>.json, written beside results.json.

results.json keeps summaries; plots need every sample. One JSON object per mode:
{"schema", "mode", "backing_label", "session", "fault_latency_seconds": [...]} and, when a
source of them exists, "vcpu_stall_seconds": [...]; with a real workload, its query latencies
during postcopy and after completion. The baseline run (no migration) is mode "baseline".
"""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA = "migrator/samples/1"
SERIES = ("fault_latency_seconds", "vcpu_stall_seconds", "query_latency_seconds",
          "query_latency_after_seconds")
QUERY_SERIES = SERIES[2:]


def samples_path(run_dir: Path, mode: str) -> Path:
    return Path(run_dir) / f"samples-{mode}.json"


def write_samples(run_dir: Path, mode: str, backing_label: str, session: str,
                  series: dict[str, list[float]]) -> Path:
    unknown = set(series) - set(SERIES)
    if unknown:
        raise ValueError(f"unknown sample series {sorted(unknown)}: use {', '.join(SERIES)}")
    path = samples_path(run_dir, mode)
    body = {"schema": SCHEMA, "mode": mode, "backing_label": backing_label, "session": session,
            **{k: [float(v) for v in vs] for k, vs in series.items()}}
    path.write_text(json.dumps(body, separators=(",", ":")) + "\n")
    return path


def read_samples(run_dir: Path, mode: str) -> dict[str, list[float]]:
    """The series saved for a mode ({} when the run predates sample files)."""
    path = samples_path(run_dir, mode)
    if not path.exists():
        return {}
    body = json.loads(path.read_text())
    if body.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {body.get('schema')!r}, expected {SCHEMA!r}")
    return {k: body[k] for k in SERIES if isinstance(body.get(k), list)}

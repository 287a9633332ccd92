"""A finished experiment run as the report sees it: its results.json and its raw samples."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MigratorError
from .samples import read_samples


@dataclass
class Run:
    path: Path
    results: dict
    label: str = ""
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # mode -> series

    @property
    def modes(self) -> list[dict]:
        return self.results.get("modes", [])


def load_run(path: str | Path, label: str | None = None) -> Run:
    path = Path(path)
    results_file = path / "results.json" if path.is_dir() else path
    if not results_file.exists():
        raise MigratorError(f"{path}: no results.json (run `migrator experiment --out {path}` "
                            f"first)")
    try:
        results = json.loads(results_file.read_text())
    except json.JSONDecodeError as e:
        raise MigratorError(f"{results_file}: not valid JSON ({e})") from e
    if not isinstance(results, dict) or not isinstance(results.get("modes"), list):
        raise MigratorError(f"{results_file}: not an experiment's results.json (no 'modes' list)")
    run_dir = results_file.parent
    samples = {m["mode"]: read_samples(run_dir, m["mode"]) for m in results["modes"]}
    if results.get("baseline"):
        samples["baseline"] = read_samples(run_dir, "baseline")
    return Run(run_dir, results, label or run_dir.resolve().name, samples)


def label_runs(runs: list[Run]) -> None:
    """Give runs that share a directory name longer labels (their paths as given)."""
    names = [r.label for r in runs]
    for r in runs:
        if names.count(r.label) > 1:
            r.label = str(r.path)

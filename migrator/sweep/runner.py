"""Run a sweep's points, each as `migrator experiment` would, into one results tree:

    OUT/sweep.json                         the spec as expanded (the points, their numbers)
    OUT/points/NNN-<values>/rep-R/         one experiment's --out: results.json, samples, logs
    OUT/summary.json, summary.md, *.png    written by summary.py once points are complete

A repetition is complete when its results.json holds every mode of the spec. A rerun of the
same spec into the same OUT skips complete repetitions and starts the others afresh (an
interrupted one leaves no results.json: the runner writes it last), so a sweep stopped with
SIGINT resumes where it was.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import MigratorError
from ..units import parse_size
from .spec import Point, Spec, link_spec

SCHEMA = "migrator/sweep/1"


def rep_dir(out: Path, point: Point, rep: int) -> Path:
    return Path(out) / "points" / point.slug / f"rep-{rep}"


def complete(path: Path, modes: list[str]) -> bool:
    try:
        results = json.loads((path / "results.json").read_text())
    except (OSError, ValueError):
        return False
    done = {m.get("mode") for m in results.get("modes", [])}
    return set(modes) <= done


def claim_tree(out: Path, spec: Spec) -> None:
    """Write OUT/sweep.json, or check that OUT holds this very sweep (resuming)."""
    out.mkdir(parents=True, exist_ok=True)
    body = {"schema": SCHEMA, "spec": spec.as_dict(),
            "points": [{"index": p.index, "dir": f"points/{p.slug}", "values": p.values}
                       for p in spec.points()]}
    path = out / "sweep.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("spec") != body["spec"]:
            raise MigratorError(f"{out} holds another sweep ({path}): give another --out, or "
                                f"the same spec to resume it")
        return
    tmp = path.with_name(f".sweep.json.{os.getpid()}")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(path)  # atomic: pods of one Indexed Job share the tree and may read it meanwhile


def plan_for(spec: Spec, point: Point, out: Path, quiet: bool = True):
    from ..dest.dataplane import BackgroundPolicy
    from ..experiment.runner import Plan

    v = point.values
    memory, hp = parse_size(v["memory"]), parse_size(v["hugepage_size"])
    if memory % hp:
        hp = 2 << 20  # as `migrator experiment` does, and says
    pattern, replay = str(v["pattern"]), None
    if pattern.startswith("trace:"):
        pattern, replay = "uniform", pattern[len("trace:"):]
    policy = BackgroundPolicy(cap_bytes_per_s=parse_size(v["background_cap"]),
                              window=int(v["background_window"]))
    return Plan(memory, hp, list(spec.modes), pattern, int(v["vcpus"]), int(v["accesses"]),
                spec.write_ratio, spec.seed, out, link=link_spec(str(v["link"])), quiet=quiet,
                policy=policy, replay=replay)


def run(spec: Spec, out: Path, indices: list[int] | None = None,
        say: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
        attempts: int = 1) -> dict:
    """Run the points (all, or those of `indices`); return counts of what happened. A
    repetition that fails is tried up to `attempts` times (a huge page pool shared with other
    work on the host can be emptied under a run)."""
    from ..experiment.runner import run as run_plan

    out = Path(out)
    claim_tree(out, spec)
    points = spec.points()
    if indices is not None:
        bad = [i for i in indices if not 0 <= i < len(points)]
        if bad:
            raise MigratorError(f"--index {bad[0]}: this sweep has points 0..{len(points) - 1}")
        points = [points[i] for i in indices]
    counts = {"skipped": 0, "ran": 0, "failed": 0}
    total = len(points) * spec.repetitions
    n = 0
    for point in points:
        for rep in range(spec.repetitions):
            n += 1
            where = rep_dir(out, point, rep)
            label = f"[{n}/{total}] point {point.index} rep {rep}"
            if complete(where, spec.modes):
                counts["skipped"] += 1
                say(f"{label}: complete already, skipped")
                continue
            for attempt in range(1, attempts + 1):
                if where.exists():
                    shutil.rmtree(where)  # an interrupted or failed attempt: start it afresh
                say(f"{label}: {', '.join(f'{k} {v}' for k, v in point.values.items())}"
                    + (f" (attempt {attempt} of {attempts})" if attempt > 1 else ""))
                started = time.monotonic()
                try:
                    results = run_plan(plan_for(spec, point, where))
                except (MigratorError, RuntimeError, OSError) as e:
                    where.mkdir(parents=True, exist_ok=True)
                    (where / "error.txt").write_text(f"{type(e).__name__}: {e}\n")
                    say(f"{label}: failed ({str(e).splitlines()[0]})")
                    continue
                counts["ran"] += 1
                say(f"{label}: done in {time.monotonic() - started:.1f}s: " + "; ".join(
                    f"{m['mode']} stall p50 {(m['vcpu_stall_seconds'].get('p50') or 0) * 1e3:.3g}"
                    f" ms total {(m['vcpu_stall_seconds'].get('total') or 0):.3g} s, migration "
                    f"{m['duration_seconds']:.3g} s" for m in results["modes"]))
                break
            else:
                counts["failed"] += 1
                say(f"{label}: failed; it is run again when the sweep resumes")
    return counts

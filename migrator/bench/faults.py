"""Faults as the vCPUs saw them, from the guest's `--record` trace and the manifest's page kinds.

A fault is a vCPU's first touch of a page (of a huge page, for whole-huge-page faults) that
stalled: slower than the guest's stall threshold. A first touch that did not stall found the
page installed already (by the background pull, or by another vCPU's fault).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..guest.trace import SCHEMA
from ..protocol.manifest import DATA, ZERO


@dataclass(frozen=True)
class Fault:
    vcpu: int
    page: int  # 4 KiB page index in the guest's memory
    latency_ns: int


def read(trace: Path, threshold_ns: int, unit_pages: int = 1) -> list[Fault]:
    """Every vCPU's stalled first touches, a unit being unit_pages pages (1: 4 KiB granules;
    a huge page's worth for whole-huge-page faults)."""
    body = json.loads(Path(trace).read_text())
    if body.get("schema") != SCHEMA:
        raise ValueError(f"{trace} is not a migrator trace ({SCHEMA})")
    out = []
    for v, run in enumerate(body["vcpus"]):
        latencies = run.get("latency_ns")
        if latencies is None:
            raise ValueError(f"{trace}: vCPU {v} has no latencies (was it recorded?)")
        seen: set[int] = set()
        for page, ns in zip(run["pages"], latencies):
            unit = page // unit_pages
            if unit in seen:
                continue
            seen.add(unit)
            if ns >= threshold_ns:
                out.append(Fault(v, page, ns))
    return out


def of_kind(faults: list[Fault], kinds: bytes, kind: int) -> list[Fault]:
    return [f for f in faults if kinds[f.page] == kind]


def data_and_zero(faults: list[Fault], kinds: bytes) -> tuple[list[Fault], list[Fault]]:
    """(faults on data pages, which cost a fetch; faults on zero pages, which do not)."""
    return of_kind(faults, kinds, DATA), of_kind(faults, kinds, ZERO)

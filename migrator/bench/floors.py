"""The reference programs in floors/ (plain C, linking Debian's libxxhash): compiled on demand
into a temporary directory, run, their one JSON object read back.

- ref_fault: 4 KiB MINOR faults, each page fetched over loopback TCP from a C page server,
  verified and installed; 1 or more toucher threads; optionally a concurrent bulk stream.
- ref_bulk: the background pull: receive into the alias, verify, CONTINUE per chunk.
- ref_huge: one whole-huge-page fault moving only its data pages.

Each program prints what it measured; the callers repeat them and take medians.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from functools import cache
from pathlib import Path

FLOORS_DIR = Path(__file__).with_name("floors")
_COMMON = ("floor.c",)
_HEADERS = ("floor.h",)


class FloorFailed(RuntimeError):
    """A reference program could not be built or did not measure; the message says why."""


@cache
def _build_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="migrator-floors-")


def binary(name: str) -> Path:
    """The compiled program floors/NAME.c (built once per process)."""
    sources = [FLOORS_DIR / f"{name}.c", *(FLOORS_DIR / c for c in _COMMON)]
    missing = [s for s in (*sources, *(FLOORS_DIR / h for h in _HEADERS)) if not s.exists()]
    if missing:
        raise FloorFailed(f"reference program source {missing[0]} not found: run the bench from "
                          "a source checkout (pip install -e .)")
    out = Path(_build_dir().name) / name
    if not out.exists():
        built = subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", str(out),
                                *map(str, sources), "-lxxhash"], capture_output=True, text=True)
        if built.returncode:
            raise FloorFailed(f"cannot build {name}: {built.stderr.strip()[-2000:]} (it needs gcc "
                              "and libxxhash-dev)")
    return out


def run(name: str, *args: str, timeout: float = 300) -> dict:
    try:
        done = subprocess.run([str(binary(name)), *args], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FloorFailed(f"{name} {' '.join(args)}: still running after {timeout:g} s") from None
    if done.returncode:
        raise FloorFailed(f"{name} {' '.join(args)} exited with {done.returncode}: "
                          f"{done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout)
    if result.get("mismatched"):
        raise FloorFailed(f"{name}: {result['mismatched']} page(s) failed verification")
    return result


def ref_fault(kinds: Path, touches: int, threads: int = 1, data_only: bool = True,
              bulk_bytes: int = 0, seed: int = 1) -> dict:
    """Faults on the pages of an image with these kinds; data_only: on data pages alone."""
    args = ["--kinds", str(kinds), "--touches", str(touches), "--threads", str(threads),
            "--bulk-bytes", str(bulk_bytes), "--seed", str(seed)]
    return run("ref_fault", *args, *(["--data-only"] if data_only else []))


def ref_bulk(kinds: Path, backing: str) -> dict:
    """A pull of a whole image with these kinds into a memfd of this backing."""
    return run("ref_bulk", "--kinds", str(kinds), "--backing", backing)


def ref_huge(kinds: Path, backing: str) -> dict:
    """One fault on a huge page with these kinds (their number makes the huge page)."""
    return run("ref_huge", "--kinds", str(kinds), "--backing", backing)


def memfd_backing(backing: str) -> str:
    """The reference programs' name for a destination's backing: shmem or hugetlb-SIZE."""
    if backing.startswith("shmem"):
        return "shmem"
    for size in ("2M", "1G"):
        if backing.startswith(f"hugetlb-{size}"):
            return f"hugetlb-{size}"
    raise FloorFailed(f"no reference program for backing {backing!r}")

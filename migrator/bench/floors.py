"""The floor programs in floors/ (plain C): compiled on demand, run, their JSON read back."""

from __future__ import annotations

import json
import subprocess
import tempfile
from functools import cache
from pathlib import Path

FLOORS_DIR = Path(__file__).with_name("floors")


@cache
def _build_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="migrator-bench-"))


def _binary(name: str) -> Path:
    source = FLOORS_DIR / f"{name}.c"
    if not source.exists():
        raise SystemExit(f"floor program {source} not found: run `migrator bench` from a source "
                         "checkout (pip install -e .)")
    out = _build_dir() / name
    if not out.exists():
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(out), str(source)], check=True)
    return out


def run(name: str, *args: str, timeout: float = 300) -> dict:
    result = subprocess.run([str(_binary(name)), *args], capture_output=True, text=True,
                            timeout=timeout, check=True)
    return json.loads(result.stdout)


def uffd_minor(pages: int, threads: int = 1) -> dict:
    return run("uffd_minor_rtt", "--pages", str(pages), "--threads", str(threads))


def tcp_pingpong(iterations: int) -> dict:
    return run("tcp_pingpong", "--iterations", str(iterations))


def tcp_stream(nbytes: int) -> dict:
    return run("tcp_stream", "--bytes", str(nbytes))

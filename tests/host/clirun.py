"""Run the real `migrator` CLI in a child process, as root or as an unprivileged user."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NOBODY = 65534
SYSFS = Path("/sys/kernel/mm/hugepages")

# Imports every part while the interpreter can still read its own files (a pyenv Python under
# /root is unreadable to nobody), then drops to nobody and runs the real CLI entry point.
_AS_NOBODY = f"""
import os, sys
from migrator import cli
cli.build_parser()
os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
sys.exit(cli.main(sys.argv[1:]))
"""


def run_cli(*args: str, as_nobody: bool = False) -> subprocess.CompletedProcess:
    code = ["-c", _AS_NOBODY] if as_nobody else ["-m", "migrator.cli"]
    return subprocess.run([sys.executable, *code, *args], capture_output=True, text=True,
                          timeout=120, cwd="/")


def run_json(*args: str, as_nobody: bool = False) -> tuple[int, object]:
    p = run_cli(*args, "--json", as_nobody=as_nobody)
    assert p.stdout, f"no output (exit {p.returncode}): {p.stderr}"
    return p.returncode, json.loads(p.stdout)


def sysfs_pool(page_size: int) -> dict[str, int]:
    d = SYSFS / f"hugepages-{page_size // 1024}kB"
    read = lambda name: int((d / name).read_text())  # noqa: E731
    return {"total": read("nr_hugepages"), "free": read("free_hugepages"),
            "reserved": read("resv_hugepages"), "surplus": read("surplus_hugepages")}

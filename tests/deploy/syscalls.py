"""Which system calls a unit's SystemCallFilter= lets through, as systemd-analyze lists them."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache


@cache
def _groups() -> dict[str, set[str]]:
    path = shutil.which("systemd-analyze")
    assert path, "systemd-analyze is missing: install the systemd package (.ci/system-deps)"
    listing = subprocess.run([path, "syscall-filter"], capture_output=True, text=True,
                             timeout=30).stdout
    groups: dict[str, set[str]] = {}
    current = None
    for line in listing.splitlines():
        word = line.strip()
        if line.startswith("@"):  # a group's name; its members are indented below it
            current = groups.setdefault(word, set())
        elif current is not None and word and not word.startswith("#"):
            current.add(word)
    return groups


def expand(name: str) -> set[str]:
    if not name.startswith("@"):
        return {name}
    return set().union(*(expand(member) for member in _groups()[name]))


def allowed_by(unit_text: str) -> set[str]:
    """The allow-list the unit's SystemCallFilter= lines build: allow lines add, ~ lines remove."""
    allowed: set[str] = set()
    lines = re.findall(r"^SystemCallFilter=(.*)$", unit_text, re.M)
    assert lines and not lines[0].startswith("~"), "expected an allow-list first"
    for line in lines:
        names = set().union(*(expand(n) for n in line.lstrip("~").split()))
        allowed = allowed - names if line.startswith("~") else allowed | names
    return allowed


_LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. )?(\w+)\(?")


def traced(strace_output: str, program: str) -> set[str]:
    """The system calls in `strace -f -o FILE` output, from the first pid's execve of program on
    (what came before belongs to the launcher), in every thread and child after it."""
    calls: set[str] = set()
    first, started = None, False
    for line in strace_output.splitlines():
        m = _LINE.match(line)
        if not m or line.split(None, 1)[1].startswith(("+++", "---")):
            continue
        pid, name = m.groups()
        first = first or pid
        if pid == first and not started:
            call = line.split(None, 1)[1]
            started = call.startswith(f'execve("{program}",') and call.rstrip().endswith("= 0")
            continue
        calls.add(name)
    assert started, f"no execve of {program} in the trace"
    return calls

"""Two hosts in network namespaces: root only, and every namespace a test makes is checked gone."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from migrator.netns import ns


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root: network namespaces, veth pairs and tc"
    if not shutil.which("ip") or not shutil.which("tc"):
        return "needs iproute2 (ip, tc)"
    probe = f"migrator-probe-{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode:
        return f"cannot create a network namespace here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


_WHY_NOT = _can_make_namespaces()


@pytest.fixture(autouse=True)
def namespaces_possible():
    if _WHY_NOT:
        pytest.skip(_WHY_NOT)


def ours(pid: int | None = None) -> list[str]:
    """The migrator namespaces that process pid (default: this one) owns right now."""
    pid = os.getpid() if pid is None else pid
    return [n for n in ns.listed() if n.startswith(ns.PREFIX) and f"-{pid}-" in n]

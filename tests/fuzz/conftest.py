"""Real daemons for the fuzz tests: one source and one destination per test module."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import migrator

from cffi_uffd import SIZE_2M
from helpers.daemons import daemon_log, start_source, stop_daemon
from migrator.client.http import fetch_manifest
from migrator.protocol.manifest import Manifest

from e2e.conftest import TOKEN, Dest

IMAGE = "64MiB"
SEED = 31
AUTH = [("Authorization", f"Bearer {TOKEN}")]
PACKAGE_DIR = Path(migrator.__file__).parent
RSS_GROWTH_LIMIT = 96 << 20  # generous: the allocator keeps some of what a burst used


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def assert_no_errors_of_ours(log: str) -> None:
    """aiohttp logs each malformed request with a traceback of its parser (noisy, harmless);
    nothing of ours may have raised."""
    for sign in (f'File "{PACKAGE_DIR}/', "Task exception was never retrieved", "Exception in callback"):
        assert sign not in log, log[-4000:]


@dataclass
class Daemon:
    url: str
    proc: subprocess.Popen = field(repr=False)
    log: Callable[[], str] = field(repr=False)
    socket: str | None = None  # a destination's guest socket

    @property
    def port(self) -> int:
        return urlsplit(self.url).port

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None


@pytest.fixture(scope="module")
def source():
    proc, url = start_source(IMAGE, seed=SEED, token=TOKEN)
    yield Daemon(url, proc, lambda: daemon_log(proc))
    stop_daemon(proc)


class Image:
    """What the source serves, as its manifest says (with a short repr for failure reports)."""

    def __init__(self, manifest: Manifest):
        self.size, self.pages, self.digests = manifest.size, manifest.pages, manifest.digests

    def __repr__(self) -> str:
        return f"Image({self.size} bytes)"


@pytest.fixture(scope="module")
def manifest(source) -> Image:
    return Image(fetch_manifest(source.url, TOKEN))


@pytest.fixture(scope="module")
def dest(source):
    d = Dest(source.url, "hgm", SIZE_2M)
    yield Daemon(d.url, d, d.log, d.socket)
    d.stop()

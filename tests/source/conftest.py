"""Fixtures for the source tests: real `migrator source` daemons on loopback, stopped by PID."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from helpers.daemons import daemon_log, start_source, stop_daemon
from migrator.protocol.manifest import Manifest
from migrator.source import GuestImage

TOKEN = "test-token-0123456789"
MEMORY, SEED = "64MiB", 7


@dataclass
class Source:
    proc: object
    url: str
    token: str | None
    memory: str
    seed: int

    @property
    def log(self) -> str:
        return daemon_log(self.proc)


@pytest.fixture(scope="package")
def source() -> Iterator[Source]:
    """A 64 MiB source with a token, shared by the tests of this package."""
    proc, url = start_source(MEMORY, SEED, token=TOKEN)
    yield Source(proc, url, TOKEN, MEMORY, SEED)
    stop_daemon(proc)


@pytest.fixture(scope="package")
def expected(source: Source) -> Manifest:
    """The manifest of the source's image, generated here, independently of the daemon."""
    with GuestImage.generate(64 << 20, SEED) as image:
        return image.manifest


@pytest.fixture
def start() -> Iterator[Callable[..., Source]]:
    """Start more sources for one test: start(memory, seed, token=None, extra_args=())."""
    started: list[Source] = []

    def _start(memory: str = "4MiB", seed: int = 1, token: str | None = None,
               extra_args=()) -> Source:
        proc, url = start_source(memory, seed, token=token, extra_args=extra_args)
        started.append(Source(proc, url, token, memory, seed))
        return started[-1]

    yield _start
    for s in started:
        stop_daemon(s.proc)

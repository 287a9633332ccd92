"""Fixtures for the cffi_uffd tests: descriptors, shmem views, huge pages, handler and toucher threads.

Everything runs against the real kernel. Huge pages are borrowed from the pool through
cffi_uffd.hugepages.reserved() and always given back.
"""

from __future__ import annotations

import os
import threading
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from cffi_uffd import (
    PAGE_SIZE, SIZE_1G, SIZE_2M, Event, Mapping, PageFault, Userfaultfd, fallocate, hugepages,
    memfd, touch,
)

JOIN_TIMEOUT = 10.0  # seconds; a toucher still blocked after this means a fault was never resolved


@pytest.fixture
def new_uffd() -> Iterator[Callable[..., Userfaultfd]]:
    """A factory of userfaultfds, all closed after the test (closing wakes any stuck toucher)."""
    made: list[Userfaultfd] = []

    def make(*args, **kwargs) -> Userfaultfd:
        made.append(Userfaultfd(*args, **kwargs))
        return made[-1]

    yield make
    for u in made:
        u.close()


@dataclass
class Views:
    """One memfd seen twice: the guest view (registered, faults) and the alias view (writes)."""

    fd: int
    guest: Mapping
    alias: Mapping
    page_size: int

    def page(self, index: int) -> int:
        return self.guest.address + index * self.page_size


@pytest.fixture
def views() -> Iterator[Callable[..., Views]]:
    """A factory of populated memfd views. MINOR faults fire only for pages already in the page
    cache (a hole is silently zero-filled), so the whole memfd is fallocated first."""
    made: list[Views] = []

    def make(pages: int, page_size: int = PAGE_SIZE) -> Views:
        size = pages * page_size
        fd = memfd(f"test-{page_size}", size, page_size)
        fallocate(fd, 0, size)
        v = Views(fd, Mapping.shared(fd, size, page_size=page_size),
                  Mapping.shared(fd, size, page_size=page_size), page_size)
        made.append(v)
        return v

    yield make
    for v in made:
        v.guest.close()
        v.alias.close()
        os.close(v.fd)


@pytest.fixture(scope="module", params=[SIZE_2M, SIZE_1G], ids=["2M", "1G"])
def huge_page_size(request) -> Iterator[int]:
    """One free huge page of each size, borrowed from the pool for the module."""
    size = request.param
    try:
        with hugepages.reserved(size, 1) as got:
            if got < 1:
                pytest.skip(f"the kernel refused to reserve one {size >> 20} MiB huge page "
                            f"(pool now {hugepages.pool(size)})")
            yield size
    except ValueError as e:  # this kernel has no pool of that size
        pytest.skip(str(e))


@pytest.fixture
def huge_2m() -> Iterator[int]:
    """One free 2 MiB huge page for the test."""
    with hugepages.reserved(SIZE_2M, 1) as got:
        if got < 1:
            pytest.skip(f"the kernel refused to reserve one 2 MiB huge page "
                        f"(pool now {hugepages.pool(SIZE_2M)})")
        yield SIZE_2M


class Resolver:
    """A Python handler thread: reads events in batches and hands each PageFault to resolve()."""

    def __init__(self, uffd: Userfaultfd, resolve: Callable[[PageFault], None]):
        self.uffd, self.resolve = uffd, resolve
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resolver", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for event in self.uffd.read_events(timeout=0.05):
                    self.events.append(event)
                    if isinstance(event, PageFault):
                        self.resolve(event)
        except BaseException as e:  # reported by __exit__ in the test's thread
            self.error = e

    def faults(self) -> list[PageFault]:
        return [e for e in self.events if isinstance(e, PageFault)]

    def __enter__(self) -> Resolver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT)
        if self.error is not None:
            raise self.error


class Toucher(threading.Thread):
    """A synthetic vCPU thread: cffi_uffd.touch over the given addresses."""

    def __init__(self, addresses: list[int], writes: bytes | None = None,
                 values: list[int] | None = None):
        super().__init__(name="toucher", daemon=True)
        self.addresses = array("Q", addresses)
        self.writes = writes
        self.values = array("Q", values) if values is not None else None
        self.latency: array | None = None
        self.checksum: int | None = None
        self.tid: int | None = None  # threading.get_native_id() inside the thread

    def run(self) -> None:
        self.tid = threading.get_native_id()
        self.latency, self.checksum = touch(self.addresses, self.writes, self.values)

    def finish(self) -> Toucher:
        self.join(JOIN_TIMEOUT)
        assert not self.is_alive(), "the toucher is still blocked: a fault was never resolved"
        return self

    def start_and_finish(self) -> Toucher:
        self.start()
        return self.finish()


@pytest.fixture
def resolver() -> type[Resolver]:
    return Resolver


@pytest.fixture
def toucher() -> type[Toucher]:
    return Toucher

"""A userfaultfd handler thread and a toucher thread for tests on the real kernel, and the
fixtures that hand them out (import new_uffd, resolver and toucher into a conftest.py)."""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable, Iterator

import pytest

from cffi_uffd import Event, PageFault, Userfaultfd
from migrator.guest.touch import touch

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
    """A synthetic vCPU thread: the C touch loop over the given addresses."""

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
        self.latency, _, self.checksum, _, _ = touch(self.addresses, self.writes, self.values)

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

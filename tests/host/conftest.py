"""Fixtures for the host tests: root only, and hugetlb pools left as they were found."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from .clirun import SYSFS, sysfs_pool


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the check and the pools are compared as root sees them")


@pytest.fixture
def pools_restored(root) -> Iterator[Callable[[int], dict[str, int]]]:
    """Leaves every pool's own (persistent) pages as the test found them. nr_hugepages as read
    also counts surplus pages (in use after a pool shrank below them): writing that back would
    make them the pool's own."""
    read = lambda d, name: int((d / name).read_text())  # noqa: E731
    found = {d: read(d, "nr_hugepages") - read(d, "surplus_hugepages")
             for d in SYSFS.glob("hugepages-*kB")}
    yield sysfs_pool
    for d, persistent in found.items():
        (d / "nr_hugepages").write_text(str(persistent))

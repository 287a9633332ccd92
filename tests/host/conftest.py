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
    """Leaves nr_hugepages of every size as the test found it."""
    found = {d: (d / "nr_hugepages").read_text() for d in SYSFS.glob("hugepages-*kB")}
    yield sysfs_pool
    for d, text in found.items():
        (d / "nr_hugepages").write_text(text)

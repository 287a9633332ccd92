"""A source and a hugetlb pool for the racing-fault stress tests, and their budget.

    MIGRATOR_STRESS_ROUNDS=50 MIGRATOR_STRESS_ACCESSES=20000 .venv/bin/pytest tests/stress -q -s

runs the long variant: more migrations per mode, each with more accesses per vCPU
(MIGRATOR_STRESS_VCPUS and MIGRATOR_STRESS_IMAGE change the vCPU count and the image size).
"""

from __future__ import annotations

import os

import pytest

from cffi_uffd import SIZE_2M
from helpers.daemons import start_source, stop_daemon
from migrator.client.http import fetch_manifest
from migrator.host import pools
from migrator.units import parse_size

from e2e.conftest import TOKEN

ROUNDS = int(os.environ.get("MIGRATOR_STRESS_ROUNDS", "4"))  # migrations per mode and kind
ACCESSES = int(os.environ.get("MIGRATOR_STRESS_ACCESSES", "4000"))  # per vCPU per migration
VCPUS = int(os.environ.get("MIGRATOR_STRESS_VCPUS", "16"))
IMAGE = os.environ.get("MIGRATOR_STRESS_IMAGE", "256MiB")
WRITE_RATIO = 0.5
SEED = 77


class Source:
    def __init__(self, url: str):
        self.url = url
        manifest = fetch_manifest(url, TOKEN)
        self.size, self.pages, self.digests = manifest.size, manifest.pages, manifest.digests

    def __repr__(self) -> str:
        return f"Source({self.url}, {self.size} bytes)"


@pytest.fixture(scope="package")
def source():
    proc, url = start_source(IMAGE, seed=SEED, token=TOKEN)
    yield Source(url)
    stop_daemon(proc)


@pytest.fixture(scope="package")
def pool_2m():
    """2 MiB pages for two guests at once (a guest's memory outlives it briefly on the
    destination), plus one for the destination's HGM probe; given back afterwards."""
    need = 2 * parse_size(IMAGE) // SIZE_2M + 1
    with pools.reserved(SIZE_2M, need) as got:
        if got < need:
            pytest.skip(f"the kernel gave {got} of {need} 2 MiB pages")
        yield

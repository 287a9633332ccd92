"""The shmem THP knob for tests of the thp mode: set to `advise` for the test if it does not
already give MADV_HUGEPAGE shmem 2 MiB folios, and its exact previous value restored after
(other people's runs share this host)."""

from __future__ import annotations

import pytest

from migrator.host import thp


@pytest.fixture
def shmem_thp():
    if thp.knobs()["shmem_enabled"] in (None, "deny"):
        pytest.skip("shmem THP is off for good on this host (no knob, or `deny`)")
    with thp.pmd_folios_advised() as record:
        yield record
    assert thp.knobs()["sizes"].get("2M") == record["before"], "knob restored"

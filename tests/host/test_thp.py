"""Shmem THP on this host: `host check` says whether the thp mode can run, why not and the
fix; the knob the mode needs is set for a run and restored exactly. Tests that change the
knob put back the exact value they found (other people's runs share this host)."""

from __future__ import annotations

import contextlib
import os

import pytest

from migrator.host import thp

from .clirun import run_cli, run_json


@contextlib.contextmanager
def pmd_knob(value: str):
    """The 2048kB shmem knob at value for the duration, then exactly as before."""
    before = thp.knobs()["sizes"]["2M"]
    thp.PMD_KNOB.write_text(value)
    try:
        yield before
    finally:
        thp.PMD_KNOB.write_text(before)
    assert thp.knobs()["sizes"]["2M"] == before


@pytest.fixture
def root_with_knobs():
    if os.geteuid() != 0:
        pytest.skip("needs root to write the shmem THP knob")
    k = thp.knobs()
    if k["shmem_enabled"] in (None, "deny", "force") or "2M" not in k["sizes"]:
        pytest.skip(f"the top-level shmem knob is {k['shmem_enabled']!r}: the per-size knob "
                    "does not decide here")


def test_with_shmem_thp_off_the_mode_is_not_available_because_and_fix(root_with_knobs):
    with pmd_knob("never"):
        code, r = run_json("host", "check")
        out = run_cli("host", "check").stdout
    assert code == 0, "the other modes still run"
    t = r["thp"]
    assert t["shmem_enabled_by_size"]["2M"] == "never" and t["shmem_2m_policy"] == "never"
    assert t["shmem_2m_for_madvised"] is False
    mode = r["modes"]["thp"]
    assert mode["available"] is False and mode["label"] == "thp (shmem 2 MiB folios)"
    why = " ".join(mode["why_not"])
    assert "no 2 MiB folios" in why and f"fix: `echo advise > {thp.PMD_KNOB}`" in why
    assert "thp                          NO" in out and "fix: `echo advise" in out


def test_with_the_knob_at_advise_the_mode_is_available(root_with_knobs):
    with pmd_knob("advise"):
        code, r = run_json("host", "check")
    assert code == 0
    assert r["thp"]["shmem_2m_for_madvised"] is True
    assert r["thp"]["madv_collapse"]["available"] is True
    mode = r["modes"]["thp"]
    assert mode["available"] is True, mode["why_not"]
    assert mode["needs"] == {"minor_shmem": True, "madv_collapse": True}


def test_the_run_sets_advise_only_when_needed_and_restores_the_exact_value(root_with_knobs):
    with pmd_knob("never"):
        with thp.pmd_folios_advised() as record:
            assert thp.knobs()["sizes"]["2M"] == "advise"
            assert (record["before"], record["set"]) == ("never", "advise")
        assert thp.knobs()["sizes"]["2M"] == "never" and record["restored"] is True
    with pmd_knob("always"):
        with thp.pmd_folios_advised() as record:
            assert thp.knobs()["sizes"]["2M"] == "always"
        assert record["set"] is None and thp.knobs()["sizes"]["2M"] == "always"


def test_the_policy_follows_the_top_level_knob_where_the_size_inherits():
    assert thp.pmd_policy({"shmem_enabled": "advise", "sizes": {"2M": "inherit"}}) == "advise"
    assert thp.pmd_policy({"shmem_enabled": "never", "sizes": {"2M": "advise"}}) == "advise"
    assert thp.pmd_policy({"shmem_enabled": "deny", "sizes": {"2M": "always"}}) == "deny"
    assert not thp.pmd_folios_for_advised({"shmem_enabled": "never", "sizes": {"2M": "inherit"}})

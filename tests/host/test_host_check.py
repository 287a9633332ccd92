"""`migrator host check` reports what the running kernel really offers."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from cffi_uffd import Feature, Userfaultfd, supported_features
from migrator.host import hgm

from .clirun import run_cli, run_json, sysfs_pool


@pytest.fixture(scope="module")
def report() -> dict:
    if os.geteuid() != 0:
        pytest.skip("needs root: the report is compared with what root sees")
    code, r = run_json("host", "check")
    assert code == 0, r
    return r


def test_json_names_every_feature_flag_as_the_kernel_api_handshake_offers_it(root, report):
    offered = supported_features().features
    assert report["features"] == {f.name.lower(): f in offered for f in Feature}
    assert report["features"]["minor_shmem"] is True
    assert report["features"]["minor_hugetlbfs"] is True
    assert report["userfaultfd"]["api"]["features"] == f"0x{int(offered):x}"


def test_json_hugepage_pools_equal_sysfs(root, report):
    assert {"2M", "1G"} <= set(report["hugepages"])
    for pool in report["hugepages"].values():
        now = sysfs_pool(pool["page_size"])
        assert {k: pool[k] for k in now} == now
        assert pool["available"] == max(0, now["free"] - now["reserved"])
        assert pool["resizable"] is True  # root
    assert report["hugepages"]["1G"]["page_size"] == 1 << 30


def test_hgm_is_absent_and_found_by_the_madv_split_probe_not_feature_bit_13(root, report):
    assert report["hgm"] is False
    assert report["hgm_detection"]["present"] is False
    assert "MADV_SPLIT" in report["hgm_detection"]["method"]
    assert "EINVAL" in report["hgm_detection"]["detail"]
    # Bit 13 (WP_UNPOPULATED upstream) is offered by this kernel, and says nothing about HGM.
    assert report["features"]["wp_unpopulated"] is True
    assert hgm.detect().present is False


def test_hgm_mode_runs_emulated_on_shmem_without_hgm(report):
    mode = report["modes"]["hgm"]
    assert mode["label"] == "hgm (emulated on shmem)"
    assert (mode["backing"], mode["emulated"], mode["fetch"]) == ("shmem", True, "4 KiB")
    assert mode["needs"] == {"minor_shmem": True}
    assert mode["available"] is True and mode["why_not"] == []


def test_hugepage_mode_runs_as_root_with_both_page_sizes(root, report):
    mode = report["modes"]["hugepage"]
    assert mode["available"] is True, mode["why_not"]
    assert mode["needs"] == {"minor_hugetlbfs": True, "exact_address": True}
    assert [s["size"] for s in mode["page_sizes"]] == ["1G", "2M"]


def test_both_ways_of_opening_a_userfaultfd_are_reported_as_they_behave(root, report):
    u = report["userfaultfd"]
    assert u["usable"] is True and u["fixes"] == []
    assert u["opened_via"] == Userfaultfd().opened_via == "syscall"
    assert u["open"]["syscall"]["ok"] is True
    dev_exists = os.path.exists("/dev/userfaultfd")
    assert u["open"]["dev"]["ok"] is dev_exists
    if dev_exists:
        st = os.stat("/dev/userfaultfd")
        assert u["device"]["mode"] == stat.filemode(st.st_mode)
        assert u["device"]["accessible"] is True


def test_kernel_sysctl_and_thp_settings_are_read_from_the_system(report):
    assert report["schema"] == "migrator/host-check/1"
    assert report["kernel"]["release"] == os.uname().release
    assert report["userfaultfd"]["unprivileged_userfaultfd"] == int(
        Path("/proc/sys/vm/unprivileged_userfaultfd").read_text())
    for key in ("enabled", "shmem_enabled"):
        text = Path(f"/sys/kernel/mm/transparent_hugepage/{key}").read_text()
        assert f"[{report['thp'][key]}]" in text


def test_human_summary_lists_everything_in_aligned_columns(root):
    p = run_cli("host", "check")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for heading in ("userfaultfd", "features", "hugepages", "transparent hugepages",
                    "HGM", "modes"):
        assert re.search(rf"^{heading}", out, re.M), heading
    value_columns = set()
    for f in Feature:
        line = re.search(rf"^  {f.name.lower()} +(yes|no)$", out, re.M)
        assert line, f.name
        value_columns.add(line.start(1) - line.start(0))
    assert len(value_columns) == 1
    assert "hgm (emulated on shmem)" in out
    # thp too where the shmem knob allows it at the moment (see test_thp.py)
    assert re.search(r"ready: hugepage, hgm \(emulated on shmem\)"
                     r"(, thp \(shmem 2 MiB folios\))?$", out.rstrip())


def test_without_userfaultfd_access_it_exits_1_and_names_the_fixes(root):
    sysctl = int(Path("/proc/sys/vm/unprivileged_userfaultfd").read_text())
    dev = Path("/dev/userfaultfd")
    if sysctl != 0 or (dev.exists() and dev.stat().st_mode & 0o006):
        pytest.skip("an unprivileged user may open userfaultfd on this host")
    code, r = run_json("host", "check", as_nobody=True)
    assert code == 1
    u = r["userfaultfd"]
    assert u["usable"] is False and u["opened_via"] is None
    assert u["open"]["syscall"]["errno"] == "EPERM"
    fixes = " ".join(u["fixes"])
    assert "vm.unprivileged_userfaultfd=1" in fixes
    if dev.exists():
        assert u["open"]["dev"]["errno"] == "EACCES"
        assert "/dev/userfaultfd" in fixes
    assert set(r["features"].values()) == {None}
    assert not any(m["available"] for m in r["modes"].values())

    p = run_cli("host", "check", as_nobody=True)
    assert p.returncode == 1
    assert "NOT READY: userfaultfd cannot be used here" in p.stdout
    assert "sysctl -w vm.unprivileged_userfaultfd=1" in p.stdout

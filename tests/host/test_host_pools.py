"""`migrator host reserve / release` move the hugetlb pools and say what the kernel gave."""

from __future__ import annotations

from cffi_uffd import SIZE_1G, SIZE_2M

from .clirun import run_cli, run_json, sysfs_pool


def _available(pool: dict) -> int:
    return max(0, pool["free"] - pool["reserved"])


def test_reserve_grows_the_2m_pool_to_the_asked_available_count(pools_restored):
    before = sysfs_pool(SIZE_2M)
    want = _available(before) + 3
    code, [r] = run_json("host", "reserve", "--2m", str(want))
    assert code == 0, r
    assert (r["size"], r["asked"], r["got"], r["short"]) == ("2M", want, want, False)
    after = sysfs_pool(SIZE_2M)
    assert after["total"] == before["total"] + 3 == r["after"]["total"]
    assert _available(after) >= want


def test_reserve_never_shrinks_a_pool_that_already_has_enough(pools_restored):
    run_json("host", "reserve", "--2m", str(_available(sysfs_pool(SIZE_2M)) + 2))
    before = sysfs_pool(SIZE_2M)
    code, [r] = run_json("host", "reserve", "--2m", "1")
    assert code == 0
    assert r["got"] == 1 and r["added"] == 0
    assert sysfs_pool(SIZE_2M) == before


def test_release_gives_back_exactly_the_pages_reserved(pools_restored):
    before = sysfs_pool(SIZE_2M)
    run_json("host", "reserve", "--2m", str(_available(before) + 4))
    code, [r] = run_json("host", "release", "--2m", "4")
    assert code == 0 and r["released"] == 4
    assert sysfs_pool(SIZE_2M)["total"] == before["total"]


def test_release_without_a_count_gives_back_every_available_page(pools_restored):
    run_json("host", "reserve", "--2m", str(_available(sysfs_pool(SIZE_2M)) + 2))
    code, [r] = run_json("host", "release", "--2m")
    assert code == 0 and r["asked"] == "all"
    assert _available(sysfs_pool(SIZE_2M)) == 0


def test_reserve_1g_reports_got_versus_asked_and_a_boot_hint_when_short(pools_restored):
    want = _available(sysfs_pool(SIZE_1G)) + 1
    code, [r] = run_json("host", "reserve", "--1g", str(want))
    assert r["asked"] == want and r["got"] == min(want, _available(sysfs_pool(SIZE_1G)))
    if r["got"] > 0:
        assert code == 0
    else:  # the kernel could not find a contiguous GiB: fail, and say how to get one
        assert code == 1 and "hugepagesz=1G hugepages=" in r["hint"]
    if r["short"]:
        assert "hugepagesz=1G" in run_cli("host", "reserve", "--1g", str(want)).stdout


def test_reserve_needs_a_pool_named(root):
    p = run_cli("host", "reserve")
    assert p.returncode == 2 and "--1g N and/or --2m N" in p.stderr


def test_reserve_as_an_unprivileged_user_fails_and_leaves_the_pool(pools_restored):
    before = sysfs_pool(SIZE_2M)
    p = run_cli("host", "reserve", "--2m", str(_available(before) + 1), as_nobody=True)
    assert p.returncode == 1
    assert "needs root" in p.stderr
    assert sysfs_pool(SIZE_2M) == before

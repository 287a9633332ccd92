"""The thp mode end to end: real source, destination and guest processes, a shmem memfd in
2 MiB THP folios, 4 KiB faults, each 2 MiB collapsed in the guest's address space once its
last page is installed; what the kernel says at the end (the guest's smaps) and in /metrics."""

from __future__ import annotations

import re
import urllib.request

from migrator.client.http import fetch_manifest

from helpers.thp import shmem_thp  # noqa: F401  (fixture)

from .conftest import IMAGE_BYTES, TOKEN, run_guest

FOLIOS = IMAGE_BYTES // (2 << 20)


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    raise AssertionError(f"no {name}{{{want}}} in /metrics")


def test_thp_faults_4k_collapses_every_folio_and_the_guest_ends_pmd_mapped(
        source, dest_factory, shmem_thp):  # noqa: F811
    manifest = fetch_manifest(source, TOKEN)
    dest = dest_factory("thp")
    report = run_guest(dest, "--vcpus", "4", "--pattern", "zipf", "--accesses", "3000",
                       "--write-ratio", "0.3")
    m = report["migration"]
    assert m["phase"] == "complete", m.get("error")
    assert m["verified_pages"] == m["pages_total"] == manifest.pages
    assert m["mismatched_pages"] == 0 and report["verify"]["mismatched_pages"] == 0
    assert report["verify"]["writes_lost"] == 0 and report["verify"]["writes_checked"] > 0
    assert (m["mode"], m["backing"], m["backing_label"]) == (
        "thp", "shmem-thp-2M", "thp (shmem 2 MiB folios)")
    assert m["granularity_bytes"] == 4096 and m["faults"] > 0
    c = m["collapse"]
    assert c["at_handover"] == {"folio_bytes": 2 << 20, "folios": FOLIOS, "huge": FOLIOS,
                                "not_huge": 0, "view_aligned": True}
    assert c["folios"] == c["complete"] == c["collapsed"] == FOLIOS
    assert c["failed"] == c["skipped_poisoned"] == 0 and c["failures"] == {}
    assert c["collapse_seconds"]["count"] == FOLIOS and c["collapse_seconds"]["p50"] > 0
    # what the guest's /proc/PID/smaps_rollup said when the migration completed
    assert c["huge_mapped"] == {"pmd_mapped_bytes": IMAGE_BYTES, "hugetlb_bytes": 0}
    # and its own view's smaps while it measured its access rate afterwards
    after = report["after_migration"]
    assert after["view_pmd_mapped_bytes"] == IMAGE_BYTES and after["accesses_per_second"] > 0

    req = urllib.request.Request(dest.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    thp = {"mode": "thp", "backing": "shmem-thp-2M"}
    assert _metric(text, "migrator_collapses_total", **thp, result="collapsed") == FOLIOS
    assert _metric(text, "migrator_collapse_seconds_count", **thp) == FOLIOS
    assert _metric(text, "migrator_guest_pmd_mapped_bytes", **thp) == IMAGE_BYTES
    card = dest.client.dashboard()["migrations"][-1]
    assert card["collapse"] == {"folios": FOLIOS, "collapsed": FOLIOS, "failed": 0}

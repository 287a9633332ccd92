"""`make deploy-check` for real (python -m deploycheck), once per session when podman is here:
the image built with no network from a Debian base, a verified migration in containers with the
least privilege and Prometheus scraping, one between pods played from deploy/k8s, one under
podman-compose; and nothing of it left behind but the cached bases.

The suite runs the steps the deploy docs stand on (SUITE_STEPS). The systemd step needs a base
of its own (minutes the first time on a machine), so it runs in the long variant alone:
`make deploy-check` runs every step, and exits non-zero if one fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from deploycheck.podman import LABEL, env

from .conftest import REPO

pytestmark = [
    pytest.mark.skipif(not shutil.which("podman"), reason="podman is not installed "
                       "(.ci/system-deps installs it, with runc, catatonit and mmdebstrap)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: pools, devices, network namespaces"),
]
MIB = 2**20
SUITE_STEPS = ("containers", "pods", "compose")


@pytest.fixture(scope="module")
def check(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("deploy-check") / "check.json"
    # The Debian bases take minutes the first time (mmdebstrap), then come from podman's store.
    done = subprocess.run([sys.executable, "-m", "deploycheck", "--json", str(out),
                           "--only", *SUITE_STEPS], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO / "deploy")},
                          capture_output=True, text=True, timeout=1800)
    result = json.loads(out.read_text()) if out.exists() else {}
    result["stdout"], result["stderr"], result["status"] = done.stdout, done.stderr, done.returncode
    return result


def _ok(check: dict) -> None:
    assert check["status"] == 0, check["stderr"][-4000:] + check.get("error", "")


@pytest.mark.timeout(1900)
def test_it_prints_one_summary_line_and_exits_0(check):
    _ok(check)
    lines = check["stdout"].splitlines()
    assert len(lines) == 1 and lines[0].startswith("deploy-check: ok: "), check["stdout"]
    for step in (*(f"{s}:" for s in SUITE_STEPS), "no compiler", "removed"):
        assert step in lines[0], step


def test_the_image_is_built_from_the_debian_base_with_no_compiler(check):
    _ok(check)
    images = check["images"]
    assert images["bases"]["migrator-base"]["ref"].startswith("localhost/migrator-base:bookworm-")
    assert images["compilers"] == []
    assert any(w.startswith("migrator-0.1.0-") for w in images["wheels"])
    assert 100 * MIB < images["migrator"]["size_bytes"] < 2048 * MIB


def test_a_migration_in_containers_verifies_every_page_with_no_capability_anywhere(check):
    _ok(check)
    c = check["containers"]
    m = c["report"]["migration"]
    assert m["phase"] == "complete" and m["backing"] == "hugetlb-2M"
    assert m["verified_pages"] == m["pages_total"] == 64 * MIB // 4096
    assert m["mismatched_pages"] == 0 and c["report"]["verify"]["writes_lost"] == 0
    for name, confined in c["confinement"].items():
        assert not any(confined["caps"].values()), (name, confined)
        assert confined["no_new_privs"] and confined["read_only"], (name, confined)
        assert not confined["privileged"] and confined["network"] == "host", (name, confined)
        assert confined["devices"] == (["/dev/userfaultfd"] if name == "guest" else []), name
    assert c["confinement"]["source"]["uid"] == 10001 and c["confinement"]["source"]["from"] == \
        "kernel"


def test_prometheus_in_its_container_scraped_the_verified_pages_from_the_destination(check):
    _ok(check)
    c = check["containers"]
    assert c["scraped_verified_pages"] == c["report"]["migration"]["verified_pages"]


def test_a_migration_between_pods_played_from_deploy_k8s_verifies(check):
    _ok(check)
    pods = check["pods"]
    assert pods["verified_pages"] == 1024 * MIB // 4096
    assert len(pods["pods"]) == 3
    confined = pods["confinement"]
    dest = next(v for k, v in confined.items() if k.startswith("migrator-dest"))
    source = next(v for k, v in confined.items() if k.startswith("migrator-source"))
    guest = next(v for k, v in confined.items() if k.startswith("migrator-guest"))
    # What the manifests ask for, as podman applied it (read from the kernel).
    assert source["uid"] == 10001 and dest["uid"] == 0
    for daemon in (source, dest):
        assert not any(daemon["caps"].values()) and daemon["no_new_privs"], daemon
        assert daemon["read_only"] and not daemon["privileged"], daemon
    assert guest["privileged"]


def test_deploy_compose_runs_under_podman_compose(check):
    _ok(check)
    compose = check["compose"]
    assert compose["verified_pages"] == 128 * MIB // 4096
    assert compose["scraped_verified_pages"] == compose["verified_pages"]


def test_nothing_of_the_run_is_left_but_the_cached_bases(check):
    label = f"label={LABEL}={check['run']}"
    for what in (["ps", "-a", "-q"], ["pod", "ps", "-q"], ["volume", "ls", "-q"],
                 ["images", "-q"]):
        left = subprocess.run(["podman", *what, "--filter", label], capture_output=True,
                              text=True, env=env(), check=True).stdout.split()
        assert left == [], (what, left)
    compose = subprocess.run(["podman", "ps", "-a", "-q", "--filter",
                              f"label=io.podman.compose.project=migrator-check-{check['run']}"],
                             capture_output=True, text=True, env=env(), check=True)
    assert compose.stdout.split() == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"migrator-check-{check['run']}" not in netns

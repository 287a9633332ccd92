"""deploy/Containerfile: one stage on a base chosen by a build argument (a registry's
debian:bookworm-slim by default, or a base made from Debian's packages), installing the project
from wheels built on the host, offline, with no compiler; and the wheel `pip wheel .` makes
holds the compiled binding, the dashboard and the entry point. The image is built and run for
real by test_deploy_check.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from .argv import default_ports
from .conftest import DEPLOY, REPO

CONTAINERFILE = DEPLOY / "Containerfile"
PACKAGE_SOURCES = ("pyproject.toml", "setup.py", "README.md", "migrator/", "cffi_uffd/")


def _instructions(path=CONTAINERFILE) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _tracked(*paths: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "--", *paths], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    return out.split()


@pytest.mark.parametrize("path", [CONTAINERFILE, DEPLOY / "prometheus/Containerfile"],
                         ids=["migrator", "prometheus"])
def test_one_stage_on_a_base_chosen_by_a_build_argument_defaulting_to_debian_bookworm_slim(path):
    ops = _instructions(path)
    assert ops[0] == ("ARG", "BASE=debian:bookworm-slim")
    assert [rest for op, rest in ops if op == "FROM"] == ["${BASE}"]


def test_the_project_comes_from_the_wheelhouse_offline_and_no_compiler_is_installed():
    runs = " ".join(rest for op, rest in _instructions() if op == "RUN")
    assert "--mount=type=bind,target=/wheels" in runs
    assert re.search(r"pip install --no-index [^&]*--find-links /wheels migrator", runs)
    assert not [rest for op, rest in _instructions() if op in ("COPY", "ADD")]
    installed = re.findall(r"for p in ([^;]+);", runs)
    assert installed and set(installed[0].split()) == {"python3", "python3-venv", "libxxhash0",
                                                           "libsqlite3-0"}
    for compiler in ("gcc", "clang", "build-essential", "-dev"):
        assert compiler not in runs, compiler


def test_the_image_runs_migrator_as_an_unprivileged_user_on_the_daemons_ports():
    instructions = dict(_instructions())  # the last of each kind
    assert json.loads(instructions["ENTRYPOINT"]) == ["migrator"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["migrator"] == "migrator.cli:main"
    assert instructions["USER"].split(":")[0] == "10001"
    assert {int(p) for p in instructions["EXPOSE"].split()} == set(default_ports().values())
    # Not relying on the base's PATH: an imported root file system has none.
    assert instructions["ENV"].startswith("PATH=/opt/migrator/bin:/usr/local/sbin:")


@pytest.mark.timeout(180)
def test_pip_wheel_makes_a_wheel_holding_the_native_parts_the_dashboard_and_the_script(tmp_path):
    """What the wheelhouse's migrator wheel holds, built from exactly the tracked package
    sources: the compiled cffi_uffd, guest touch loop and data plane, the dashboard page, the
    script."""
    context = tmp_path / "src"
    for rel in _tracked(*PACKAGE_SOURCES):
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, context / rel)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
                          "--quiet", "--wheel-dir", str(tmp_path / "wheels"), str(context)],
                         capture_output=True, text=True, timeout=170)
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = (tmp_path / "wheels").glob("migrator-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("cffi_uffd/_native", "migrator/guest/_native", "migrator/_dataplane"):
        assert any(re.fullmatch(rf"{module}\..*\.so", n) for n in names), (module, names)
    assert "migrator/dest/static/dashboard.html" in names
    assert not any(n.startswith("deploycheck/") for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "migrator = migrator.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

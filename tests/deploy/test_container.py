"""deploy/Containerfile: the image builds from paths that exist and that the ignore file keeps,
and the build stage's wheel holds the compiled binding, the dashboard and the entry point."""

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
BASE = "python:3.11-slim-bookworm"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _copies_from_context() -> list[str]:
    sources = []
    for op, rest in _instructions():
        if op in ("COPY", "ADD") and "--from=" not in rest:
            words = [w for w in rest.split() if not w.startswith("--")]
            sources += words[:-1]
    return sources


def _ignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """Docker's .dockerignore: the last matching pattern wins; `!` re-includes."""
    out = []
    for line in (DEPLOY / "Containerfile.dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rx = re.escape(pattern).replace(r"\*\*", "\0").replace(r"\*", "[^/]*")
        rx = rx.replace(r"\?", "[^/]").replace("\0/", "(.*/)?").replace("\0", ".*")
        out.append((keep, re.compile(rx)))
    return out


def _in_context(rel: str, patterns=None) -> bool:
    patterns = patterns or _ignore_patterns()
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    included = True
    for keep, rx in patterns:
        if any(rx.fullmatch(p) for p in prefixes):
            included = keep
    return included


def _tracked(*paths: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "--", *paths], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    return out.split()


def test_both_stages_start_from_the_slim_bookworm_python():
    froms = [rest.split()[0] for op, rest in _instructions() if op == "FROM"]
    assert froms == [BASE, BASE]


def test_the_build_stage_installs_the_compiler_and_headers_and_the_runtime_the_xxh3_library():
    runs: list[str] = []  # each stage's RUN commands
    for op, rest in _instructions():
        if op == "FROM":
            runs.append("")
        elif op == "RUN":
            runs[-1] += " " + rest
    build, runtime = runs
    for package in ("gcc", "libc6-dev", "linux-libc-dev", "libxxhash-dev"):
        assert re.search(rf"\b{package}\b", build), package
    assert re.search(r"\blibxxhash0\b", runtime) and "gcc" not in runtime


def test_every_copied_path_exists_and_the_ignore_file_keeps_it():
    sources = _copies_from_context()
    assert {"pyproject.toml", "setup.py", "README.md", "migrator/", "cffi_uffd/"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), source
    patterns = _ignore_patterns()
    for rel in _tracked(*sources):
        assert _in_context(rel, patterns), f"{rel} is copied but ignored by the build context"


def test_the_ignore_file_keeps_the_venv_and_build_products_out():
    for rel in (".venv/bin/python", "results/latest/results.json", ".git/config",
                "cffi_uffd/_native.abi3.so", "cffi_uffd/_native.c", "migrator/guest/_native.c",
                "migrator/__pycache__/cli.cpython-311.pyc", "migrator.egg-info/PKG-INFO"):
        assert not _in_context(rel), rel


def test_the_image_runs_migrator_as_an_unprivileged_user_on_the_daemons_ports():
    instructions = dict(_instructions())  # the last of each kind: the runtime stage's
    assert json.loads(instructions["ENTRYPOINT"]) == ["migrator"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["migrator"] == "migrator.cli:main"
    assert instructions["USER"].split(":")[0] == "10001"
    assert {int(p) for p in instructions["EXPOSE"].split()} == set(default_ports().values())


@pytest.mark.timeout(180)
def test_the_build_stage_makes_a_wheel_from_exactly_the_copied_files(tmp_path):
    """What `pip wheel .` does in the build stage, on a context holding only what COPY brings in
    (and the ignore file lets through): the compiled cffi_uffd, the dashboard page, the script."""
    context = tmp_path / "src"
    patterns = _ignore_patterns()
    for rel in _tracked(*_copies_from_context()):
        if _in_context(rel, patterns):
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
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "migrator = migrator.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

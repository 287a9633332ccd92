"""Reports of experiment runs, from one real small experiment: files, plot, tables, `migrator report`.

The module runs `migrator experiment --memory 256MiB --hugepage-size 2M --accesses 500` once
(the default modes: all three, real daemons and guests) and renders from what it wrote.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from migrator.report import load_run, read_samples, render_run
from migrator.report.progress import Progress, bar
from migrator.quantiles import summarize

MODES = ("hgm", "hugepage", "thp")
HGM_COLOR, HUGEPAGE_COLOR, THP_COLOR = (0x0F, 0x8B, 0x8D), (0xD9, 0x73, 0x1A), (0x7C, 0x3A, 0xED)


def migrator(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "migrator.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("experiment") / "small"
    done = migrator("experiment", "--memory", "256MiB", "--hugepage-size", "2M", "--accesses",
                    "500", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "--json mode must print no progress"
    assert json.loads(done.stdout)["modes"]
    return out


def _has_color(png: Path, rgb: tuple[int, int, int], tolerance: int = 12) -> bool:
    from PIL import Image

    with Image.open(png) as im:
        colors = im.convert("RGB").getcolors(maxcolors=1 << 20)
    return any(all(abs(c - w) <= tolerance for c, w in zip(color, rgb)) and n > 50
               for n, color in colors)


def test_experiment_writes_samples_plot_and_report_beside_results(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    for m in results["modes"]:
        samples = read_samples(run_dir, m["mode"])["fault_latency_seconds"]
        # the raw samples are the very latencies the summary was made from
        assert summarize(samples) == pytest.approx(m["fault_latency_seconds"])
        assert len(samples) == m["fault_latency_seconds"]["count"] > 0
    png = run_dir / "latency-cdf.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(_has_color(png, c) for c in (HGM_COLOR, HUGEPAGE_COLOR, THP_COLOR)), \
        "every mode drawn"
    md = (run_dir / "report.md").read_text()
    assert "![fault latency CDF" in md and "(latency-cdf.png)" in md
    assert "| | hgm | hugepage | thp |" in md
    html = (run_dir / "report.html").read_text()
    assert '<img src="latency-cdf.png"' in html and "<table>" in html


def test_report_table_holds_the_measured_numbers(run_dir):
    run = load_run(run_dir)
    written = render_run(run, run_dir / "again")
    rows = dict(written.table.rows)
    assert written.table.columns == list(MODES)
    assert rows["granularity"] == ["4 KiB", "2 MiB", "4 KiB"]
    assert rows["backing"][2] == "thp (shmem 2 MiB folios)"
    # the page each mode's memory is made of: emulated hgm has no huge page at all
    assert rows["huge page"] == ["none (shmem 4K)", "2M", "2M THP folio"]
    # the guest's full check, as many pages as it checked: all those it did not write
    checks = [m["guest_verify"] for m in json.loads((run_dir / "results.json").read_text())["modes"]]
    assert rows["guest check"] == [
        f"{v['pages_checked']}/{v['pages_checked']} pages, "
        f"{v['writes_checked']}/{v['writes_checked']} writes" for v in checks]
    assert all(v["pages_checked"] + v["pages_written"] == 65536 for v in checks)
    # thp: every 2 MiB folio collapsed, and the guest mapped by PMDs at the end like hugetlb;
    # emulated hgm stays at 4 KiB
    assert rows["2 MiB folios huge at handover"] == ["–", "–", "128/128"]
    assert rows["2 MiB folios collapsed"] == ["–", "–", "128/128"]
    assert rows["mapped huge after"] == ["0 B (0%)", "256 MiB (100%)", "256 MiB (100%)"]
    assert all(r != "–" for r in rows["access rate after"])
    assert rows["faults"] == [str(m["faults"]) for m in run.modes]
    assert rows["pages verified"] == [f"{m['pages_total']}/{m['pages_total']}" for m in run.modes]
    assert rows["result"] == ["complete"] * 3
    assert "emulated on shmem" in written.markdown.read_text() or run.results["host"]["hgm"]


def test_report_command_re_renders_a_run(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    for name in ("report.md", "report.html", "latency-cdf.png"):
        (copy / name).unlink()
    done = migrator("report", str(copy))
    assert done.returncode == 0, done.stderr
    assert "fault latency p99" in done.stdout and str(copy / "report.html") in done.stdout
    for name in ("report.md", "report.html", "latency-cdf.png"):
        assert (copy / name).stat().st_size > 0


def test_report_compares_runs_in_one_table_with_a_column_per_run_and_mode(run_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(run_dir, a)
    shutil.copytree(run_dir, b)
    for mode in MODES:  # b is an older run without raw samples: still compared, from summaries
        (b / f"samples-{mode}.json").unlink()
    out = tmp_path / "cmp"
    done = migrator("report", str(a), str(b), "--out", str(out))
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0]
    assert header.split() == ["a", "·", "hgm", "a", "·", "hugepage", "a", "·", "thp",
                              "b", "·", "hgm", "b", "·", "hugepage", "b", "·", "thp"]
    md = (out / "compare.md").read_text()
    assert "| | a · hgm | a · hugepage | a · thp | b · hgm | b · hugepage | b · thp |" in md
    assert "no samples-<mode>.json" in md
    assert (out / "latency-cdf.png").stat().st_size > 0

    as_json = json.loads(migrator("report", str(a), str(b), "--json").stdout)
    assert as_json["columns"] == ["a · hgm", "a · hugepage", "a · thp", "b · hgm",
                                  "b · hugepage", "b · thp"]
    assert as_json["rows"]["faults"][0] == as_json["rows"]["faults"][3]


def test_runs_with_the_same_directory_name_are_told_apart(run_dir, tmp_path):
    for parent in ("x", "y"):
        shutil.copytree(run_dir, tmp_path / parent / "latest")
    done = migrator("report", str(tmp_path / "x" / "latest"), str(tmp_path / "y" / "latest"),
                    "--json")
    columns = json.loads(done.stdout)["columns"]
    assert len(set(columns)) == 6 and any("x/latest" in c for c in columns)


def test_report_of_a_directory_without_results_says_what_to_do(tmp_path):
    done = migrator("report", str(tmp_path))
    assert done.returncode != 0
    assert "no results.json" in done.stderr and "migrator experiment --out" in done.stderr


def test_experiment_shows_progress_and_where_the_report_is(tmp_path):
    out = tmp_path / "progress"
    done = migrator("experiment", "--memory", "128MiB", "--hugepage-size", "2M", "--modes",
                    "hgm", "--pattern", "uniform", "--vcpus", "2", "--accesses", "20000",
                    "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "[hgm] destination up" in done.stderr and "[hgm] complete" in done.stderr
    # the destination was asked while the guest ran (a log is not a terminal: sparse lines)
    assert "pages present" in done.stderr or "hand over its memory" in done.stderr
    assert f"report:  {out / 'report.html'}" in done.stdout
    assert (out / "samples-hgm.json").exists() and (out / "latency-cdf.png").exists()


# -- the terminal progress line -----------------------------------------------------------------

class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_one_line_on_a_terminal():
    term = _Terminal()
    p = Progress(stream=term)
    p.update("1/4 pages")
    p.update("2/4 pages")
    p.say("done")
    assert term.getvalue() == "\r\x1b[2K1/4 pages\r\x1b[2K2/4 pages\ndone\n"


def test_progress_in_a_log_is_sparse_and_quiet_is_silent():
    log = io.StringIO()
    p = Progress(stream=log)
    p.update("first")
    p.update("too soon")
    p.say("kept")
    assert log.getvalue() == "first\nkept\n"
    quiet = io.StringIO()
    q = Progress(quiet=True, stream=quiet)
    q.update("x")
    q.say("y")
    assert quiet.getvalue() == ""
    assert bar(1, 4, width=8) == "[##......]" and bar(0, 0, width=2) == "[..]"

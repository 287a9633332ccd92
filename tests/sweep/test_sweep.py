"""`migrator sweep`: a 4-point grid of real experiments into one results tree, interrupted with
SIGINT after its first point and resumed (the complete point skipped), then its table and its
plots against each swept variable; and the spec's errors for people."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from helpers.signals import sigint_default
from migrator.errors import MigratorError
from migrator.sweep import parse

CMD = [sys.executable, "-m", "migrator.cli", "sweep"]
GRID = """\
modes = ["hgm"]
seed = 3
[grid]
link = ["loopback"]
memory = ["32MiB"]
hugepage_size = ["2M"]
vcpus = [1]
pattern = ["zipf", "uniform"]
accesses = [100, 200]
"""


def test_a_sweep_resumes_after_sigint_and_writes_its_table_and_plots(tmp_path):
    spec, out = tmp_path / "grid.toml", tmp_path / "tree"
    spec.write_text(GRID)
    proc = subprocess.Popen([*CMD, str(spec), "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    try:
        for line in proc.stderr:  # the progress lines: stop once the first point is done
            if "point 0 rep 0: done" in line:
                proc.send_signal(signal.SIGINT)
                break
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert len(points) == 4
    finished = [p for p in points if (out / p["dir"] / "rep-0" / "results.json").exists()]
    assert 1 <= len(finished) < 4

    done = subprocess.run([*CMD, str(spec), "--out", str(out)], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("complete already, skipped") == len(finished)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete_repetitions"] == summary["expected"] == 4
    rows = summary["rows"]
    assert sorted((r["pattern"], r["accesses"]) for r in rows) == sorted(
        (p, a) for p in ("zipf", "uniform") for a in (100, 200))
    assert all(r["mode"] == "hgm" and r["faults"] > 0 and r["migration"] > 0 for r in rows)
    table = (out / "summary.md").read_text()
    assert table.count("| hgm |") == 4
    for axis in ("pattern", "accesses"):
        assert (out / f"plot-{axis}.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "plot-memory.png").exists()  # one value: not swept

    # `migrator report` compares sweeps point by point (here the sweep with itself)
    compared = subprocess.run([sys.executable, "-m", "migrator.cli", "report", str(out), str(out),
                               "--json"], capture_output=True, text=True, timeout=60)
    assert compared.returncode == 0, compared.stderr
    result = json.loads(compared.stdout)
    assert len(result["rows"]) == 4
    assert all(r["ratio"]["migration"] == [1.0] for r in result["rows"])


@pytest.mark.parametrize("body, words", [
    ({"grid": {"link": ["200mbit"]}}, "BANDWIDTH/RTT"),
    ({"grid": {"memory": ["3MiB"]}}, "multiple of 2 MiB"),
    ({"grid": {"colour": ["red"]}}, "unknown grid key"),
    ({"modes": ["fast"]}, "modes"),
    ({"grid": {"link": ["loopback"], "rtt": ["1ms"]}}, "not both"),
])
def test_a_bad_spec_says_what_is_wrong(body, words):
    with pytest.raises(MigratorError, match=words):
        parse(body)


def test_bandwidth_and_rtt_lists_are_crossed_into_links():
    spec = parse({"grid": {"bandwidth": ["1gbit", "0"], "rtt": ["1ms"], "vcpus": [1, 2]}})
    assert spec.axes["link"] == ["1gbit/1ms/0", "0/1ms/0"]
    assert [p.values["vcpus"] for p in spec.points()] == [1, 2, 1, 2]
    assert spec.swept == ["link", "vcpus"]

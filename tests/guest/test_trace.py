"""Access traces: what each vCPU touched is saved and replayed as the same accesses; a trace
that does not fit this guest is refused with a message, not a traceback."""

import json
from array import array

import pytest

from migrator.errors import MigratorError
from migrator.guest import trace, vcpu

PAGES = 1024


def test_a_saved_trace_replays_the_same_accesses_in_the_same_order(tmp_path):
    runs = vcpu.plan(1 << 40, PAGES, 2, "zipf", 300, 0.3, seed=4)
    for r in runs:
        r.latency_ns = array("Q", range(len(r.pages)))
    path = tmp_path / "trace.json"
    trace.save(path, PAGES, runs)
    replayed = vcpu.plan(1 << 40, PAGES, 99, "uniform", 1, 0.0, seed=4,
                         replay=trace.load(path, PAGES))
    assert [r.pages for r in replayed] == [r.pages for r in runs]
    assert [r.writes for r in replayed] == [r.writes for r in runs]
    assert json.loads(path.read_text())["vcpus"][1]["latency_ns"][:3] == [0, 1, 2]


@pytest.mark.parametrize("body, words", [
    ({"schema": "other"}, "is not a migrator trace"),
    ({"schema": trace.SCHEMA, "vcpus": []}, "holds no vCPU sequences"),
    ({"schema": trace.SCHEMA, "vcpus": [{"pages": [PAGES], "writes": [0]}]}, "larger guest"),
    ({"schema": trace.SCHEMA, "vcpus": [{"pages": [1, 2], "writes": [0]}]}, "as many 'writes'"),
])
def test_a_trace_that_does_not_fit_is_refused_with_the_reason(tmp_path, body, words):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(body))
    with pytest.raises(MigratorError, match=words):
        trace.load(path, PAGES)


def test_a_missing_trace_file_is_a_message(tmp_path):
    with pytest.raises(MigratorError, match="cannot read trace"):
        trace.load(tmp_path / "nope.json", PAGES)

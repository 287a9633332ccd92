"""Every report says what backed the memory: each destination metric carries `backing` next to
`mode`, and the Grafana dashboard filters, groups and labels by it wherever it shows a mode."""

from __future__ import annotations

import json
from pathlib import Path

from migrator import metrics

DASHBOARD = (Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
             / "migrator.json")


def _destination_metrics():
    for value in vars(metrics).values():
        name = getattr(value, "_name", "")
        if name.startswith("migrator_") and not name.startswith("migrator_source_"):
            yield name, value._labelnames


def test_every_destination_metric_carries_mode_and_backing():
    found = dict(_destination_metrics())
    assert len(found) >= 18  # the premise: the destination's metrics were found
    assert {n: l for n, l in found.items() if l[:2] != ("mode", "backing")} == {}


def _targets(node):
    if isinstance(node, dict):
        if "expr" in node:
            yield node
        for v in node.values():
            yield from _targets(v)
    elif isinstance(node, list):
        for v in node:
            yield from _targets(v)


def test_grafana_filters_and_labels_every_mode_by_its_backing():
    d = json.loads(DASHBOARD.read_text())
    assert "backing" in [v["name"] for v in d["templating"]["list"]]
    by_mode = [t for t in _targets(d["panels"]) if 'mode=~"$mode"' in t["expr"]]
    assert len(by_mode) > 20
    assert [t["expr"] for t in by_mode if 'backing=~"$backing"' not in t["expr"]] == []
    legends = [t["legendFormat"] for t in by_mode if "{{mode}}" in t.get("legendFormat", "")]
    assert legends and [legend for legend in legends if "{{backing}}" not in legend] == []
    titles = [p.get("title", "") for p in d["panels"]] + [p.get("description", "")
                                                          for p in d["panels"]]
    assert not [t for t in titles if "(HGM)" in t]

"""deploy/grafana: every expression of the dashboard parses in a real Prometheus and names only
metrics that real daemons export (scraped after a real migration, so renaming a metric in
migrator.metrics breaks this test), and the provisioning points where the compose file mounts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from helpers.prometheus import PromQLError

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "migrator.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources"
PROVIDERS = GRAFANA / "provisioning" / "dashboards"

# What issue 4 asks the dashboard to show, as the metrics that show it.
REQUIRED = {
    "migrator_fault_latency_seconds_bucket", "migrator_vcpu_stall_seconds_bucket",
    "migrator_vcpu_blocktime_seconds_total", "migrator_faults_total",
    "migrator_pages_remaining", "migrator_migrations", "migrator_fetched_bytes_total",
    "migrator_fetched_pages_total", "migrator_urgent_requests_in_flight",
    "migrator_install_races_total", "migrator_retries_total", "migrator_errors_total",
    "migrator_source_request_duration_seconds_bucket", "migrator_source_served_bytes_total",
}
# Grafana's own variables, as a query would see them over a short range.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m",
            "__interval_ms": "15000", "__range_s": "300"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\w+)$", re.M)
_SAMPLE_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{[^}]*\})? \S+", re.M)
_SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("", "_count", "_sum"),
             "counter": ("",), "gauge": ("",), "untyped": ("",)}


def metric_names(expr: str) -> set[str]:
    """The migrator_ metric names an expression selects: identifiers outside string literals
    (label values, regexes) that start with migrator_."""
    return {name for name in _IDENT.findall(_STRING.sub('""', expr))
            if name.startswith("migrator_")}


def substitute(expr: str, variables: dict[str, str]) -> str:
    """expr as Grafana sends it: $var, ${var}, ${var:fmt} and [[var]] replaced."""
    def value(m: re.Match) -> str:
        name = next(g for g in m.groups() if g)
        return BUILTINS.get(name, variables.get(name, m.group(0)))
    return _VARIABLE.sub(value, expr)


def exported_names(exposition: str) -> set[str]:
    """Every sample name a text-format exposition declares (# TYPE) or carries."""
    names = set(_SAMPLE_LINE.findall(exposition))
    for family, kind in _TYPE_LINE.findall(exposition):
        names |= {family + suffix for suffix in _SUFFIXES.get(kind, ("",))}
    return names


def _panels(panels: list[dict]):
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))  # the panels of collapsed rows


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def expressions(board: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    found = []
    for p in _panels(board["panels"]):
        for t in p.get("targets", []):
            found.append((f"panel {p['id']} {p['title']!r} {t['refId']}", t["expr"]))
    for v in board["templating"]["list"]:
        if v["type"] == "query":
            query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            found.append((f"variable {v['name']}", query))
    return found


def as_promql(query: str) -> str:
    """label_values(expr, label) as the PromQL that finds the same series."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", query)
    return f"count by ({m.group(2)}) ({m.group(1)})" if m else query


def variables(board: dict) -> dict[str, str]:
    """Every template variable set to "All" (regex .*); the datasource stays as it is."""
    return {v["name"]: v.get("allValue") or ".*" for v in board["templating"]["list"]
            if v["type"] != "datasource"}


# -- the tokenizer itself ----------------------------------------------------------------------

def test_metric_names_skip_functions_labels_strings_and_keep_suffixes():
    expr = ('histogram_quantile(0.9, sum by (le, mode) (rate(migrator_fault_latency_seconds_bucket'
            '{mode=~"migrator_not_a_metric", job=\'migrator_neither\'}[$__rate_interval]))) '
            '/ on(mode) migrator_faults_total or vector(0) + migrator:recorded_rule')
    assert metric_names(expr) == {"migrator_fault_latency_seconds_bucket", "migrator_faults_total"}


def test_exported_names_expand_histograms_and_keep_counters_without_samples():
    text = ("# TYPE migrator_a_seconds histogram\nmigrator_a_seconds_bucket{le=\"1\"} 1\n"
            "# TYPE migrator_b_total counter\n# TYPE migrator_c gauge\nmigrator_c 3\n")
    assert exported_names(text) >= {"migrator_a_seconds_bucket", "migrator_a_seconds_count",
                                    "migrator_a_seconds_sum", "migrator_b_total", "migrator_c"}


def test_substitute_replaces_grafana_variables():
    expr = 'rate(x{instance=~"$dest", mode=~"${mode:regex}"}[$__rate_interval]) [[mode]]'
    assert substitute(expr, {"dest": ".*", "mode": "hgm"}) == (
        'rate(x{instance=~".*", mode=~"hgm"}[1m]) hgm')


# -- the dashboard -----------------------------------------------------------------------------

def test_dashboard_is_grafana_json_with_a_prometheus_datasource_variable():
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    assert "id" not in board or board["id"] is None  # provisioned dashboards carry no db id
    (ds,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert ds["query"] == "prometheus"
    panels = list(_panels(board["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": f"${{{ds['name']}}}"}, p["title"]
        assert p["targets"] and p.get("description"), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"], p["title"]
            assert t.get("datasource", p["datasource"]) == p["datasource"], p["title"]
    for v in board["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == {"type": "prometheus", "uid": f"${{{ds['name']}}}"}


def test_dashboard_shows_what_the_issue_asks():
    board = dashboard()
    used = set().union(*(metric_names(e) for _, e in expressions(board)))
    assert REQUIRED <= used, f"not on the dashboard: {sorted(REQUIRED - used)}"
    panels = [p for p in _panels(board["panels"]) if p["type"] != "row"]
    heatmaps = [p for p in panels if p["type"] == "heatmap"]
    assert any(t.get("format") == "heatmap" and "migrator_fault_latency_seconds_bucket" in t["expr"]
               for p in heatmaps for t in p["targets"])
    assert any(p.get("repeat") == "mode" for p in heatmaps)  # one heatmap per mode
    quantile_exprs = [t["expr"] for p in panels for t in p["targets"]]
    for histogram in ("migrator_fault_latency_seconds_bucket", "migrator_vcpu_stall_seconds_bucket"):
        assert any(re.search(r"histogram_quantile\(.*by \(le, mode", e) and histogram in e
                   for e in quantile_exprs), histogram
    assert any("vcpu" in e and "migrator_vcpu_blocktime_seconds_total" in e
               for e in quantile_exprs)  # stalled time per vCPU
    assert any("stream" in e and "migrator_fetched_bytes_total" in e for e in quantile_exprs)


# -- against real daemons and a real Prometheus ---------------------------------------------------

def test_every_expression_names_a_metric_the_daemons_export(scraped_migration):
    exported = set()
    for scraped in scraped_migration.metrics.values():
        exported |= exported_names(scraped["text"])
    assert "migrator_fault_latency_seconds_bucket" in exported  # the scrape is what we think
    unknown = {}
    for where, expr in expressions(dashboard()):
        names = metric_names(expr)
        assert names, f"{where} names no migrator_ metric: {expr}"
        if names - exported:
            unknown[where] = sorted(names - exported)
    assert not unknown, f"metrics the daemons do not export: {unknown}"


def test_every_expression_parses_and_finds_data_in_a_real_prometheus(scraped_migration):
    """Prometheus answers 400 to a syntax error. Expressions over metrics that carry samples
    after a clean migration must find series (retries, errors and races have none)."""
    prom, board = scraped_migration.prom, dashboard()
    with_samples = set()
    for scraped in scraped_migration.metrics.values():
        with_samples |= set(_SAMPLE_LINE.findall(scraped["text"]))
    values = variables(board)
    refused, empty = {}, []
    for where, expr in expressions(board):
        promql = substitute(as_promql(expr), values)
        assert "$" not in promql, f"{where}: unknown variable in {promql}"
        try:
            result = prom.query(promql)
        except PromQLError as e:
            refused[where] = f"{e.status} {e.message}: {promql}"
            continue
        if metric_names(expr) <= with_samples and not result:
            empty.append(f"{where}: {promql}")
    assert not refused, refused
    assert not empty, empty


# -- provisioning ------------------------------------------------------------------------------

def test_provisioning_points_at_prometheus_and_the_dashboards_folder():
    (datasource_file,) = DATASOURCES.glob("*.yaml")
    (source,) = yaml.safe_load(datasource_file.read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert source.get("isDefault") is True
    (provider_file,) = PROVIDERS.glob("*.yaml")
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    readme = (GRAFANA / "README.md").read_text()
    for path in ("/etc/grafana/provisioning", "/var/lib/grafana/dashboards",
                 "http://prometheus:9090"):
        assert path in readme

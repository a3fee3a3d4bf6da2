"""Grafana dashboards: every JSON parses, every panel has a title and Prometheus targets,
every expression is valid PromQL (promtool parses it) and reads only series the services
export, histograms are read through their buckets and counters through rate/increase.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_alerts import exported_series, metric_names, run_promtool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCE_UID = "prometheus"  # deploy/grafana/provisioning/datasources/prometheus.yml
GRID_WIDTH = 24

# Grafana's built-in variables, replaced by a typical value before promtool parses.
_BUILTIN = re.compile(r"\$\{?__(?:rate_interval|interval|range)\}?")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+),)?\s*(?P<label>\w+)\s*\)\s*$")
_RATED = re.compile(r"\b(?:rate|irate|increase|resets)\s*\(\s*([a-zA-Z_:][\w:]*)")
_COUNTER_LIKE = ("_total", "_bucket", "_sum", "_count")


def _dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("**/*.json"))


def _load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, the ones inside (collapsed) rows included."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _graph_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in _panels(dashboard["panels"]) if p.get("type") != "row"]


def _expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(where, PromQL)`` of every target and of every query variable's selector."""
    for panel in _graph_panels(dashboard):
        for target in panel.get("targets", []):
            yield f"{panel['title']} / {target.get('refId')}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text)
        assert match, f"variable {variable['name']}: only label_values() queries expected"
        if match["selector"]:
            yield f"variable {variable['name']}", match["selector"]


def _promql(expr: str) -> str:
    """The expression with Grafana variables replaced, so that promtool can parse it."""
    return _VARIABLE.sub(".*", _BUILTIN.sub("5m", expr))


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    files = _dashboard_files()
    assert files, f"no dashboard in {DASHBOARDS}"
    return {path.name: _load(path) for path in files}


# ------------------------------------------------------------------------------ tests


def test_dashboards_parse_and_have_unique_uids(dashboards: dict[str, dict[str, Any]]) -> None:
    uids = [d["uid"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids)
    assert "absch-overview.json" in dashboards
    for name, dashboard in dashboards.items():
        assert dashboard["title"].strip(), name
        assert isinstance(dashboard["schemaVersion"], int), name
        assert dashboard.get("id") is None, f"{name}: provisioned dashboards carry no id"
        ids = [p["id"] for p in _panels(dashboard["panels"])]
        assert len(set(ids)) == len(ids), f"{name}: panel ids must be unique"


def test_every_panel_has_a_title_and_prometheus_targets(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for name, dashboard in dashboards.items():
        for panel in _panels(dashboard["panels"]):
            assert panel.get("title", "").strip(), f"{name}: panel {panel.get('id')} untitled"
            if panel["type"] == "row":
                continue
            where = f"{name}: {panel['title']}"
            assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, where
            targets = panel.get("targets")
            assert targets, f"{where}: no targets"
            ref_ids = [t["refId"] for t in targets]
            assert len(set(ref_ids)) == len(ref_ids), where
            for target in targets:
                assert target["expr"].strip(), where
                assert target.get("datasource", panel["datasource"])["uid"] == DATASOURCE_UID


def test_panels_fit_the_grid_without_overlapping(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, dashboard in dashboards.items():
        taken: dict[tuple[int, int], str] = {}
        for panel in _panels(dashboard["panels"]):
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= GRID_WIDTH, f"{name}: {panel['title']}"
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in taken, f"{name}: {panel['title']} on {taken[(x, y)]}"
                    taken[(x, y)] = panel["title"]


def test_every_series_a_dashboard_reads_is_exported_by_the_services(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    exported = exported_series()
    for name, dashboard in dashboards.items():
        for where, expr in _expressions(dashboard):
            names = metric_names(expr)
            assert names, f"{name}: {where} selects no series"
            assert names <= exported.keys(), (name, where, names - exported.keys())


def test_histograms_through_buckets_and_counters_through_rates(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    exported = exported_series()
    for name, dashboard in dashboards.items():
        for where, expr in _expressions(dashboard):
            for series in _RATED.findall(expr):
                assert series.endswith(_COUNTER_LIKE), f"{name}: {where}: rate of {series}"
                assert exported.get(series) in {"counter", "histogram", "summary"}, where
            if "histogram_quantile" in expr:
                assert {n for n in metric_names(expr) if not n.endswith("_bucket")} == set(), where
                assert re.search(r"\bby\s*\([^)]*\ble\b", expr), f"{name}: {where}: keep le"
            for series in metric_names(expr):
                if series.endswith("_bucket"):
                    assert "histogram_quantile" in expr, f"{name}: {where}: raw buckets"
                if exported.get(series) == "counter" and series.endswith("_total"):
                    assert series in _RATED.findall(expr), f"{name}: {where}: raw counter"


def test_promtool_parses_every_expression(
    dashboards: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    rules = [
        {"record": f"grafana:expression_{i}", "expr": _promql(expr)}
        for i, (_, expr) in enumerate(
            e for dashboard in dashboards.values() for e in _expressions(dashboard)
        )
    ]
    path = tmp_path / "dashboard-expressions.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}))
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_issue_s_panels_are_all_there(dashboards: dict[str, dict[str, Any]]) -> None:
    used = {
        series
        for dashboard in dashboards.values()
        for _, expr in _expressions(dashboard)
        for series in metric_names(expr)
    }
    wanted = {
        # throughput
        "absch_events_consumed_total",
        "absch_events_published_total",
        # latency
        "absch_http_request_seconds_bucket",
        "absch_event_handle_seconds_bucket",
        "monitor_check_seconds_bucket",
        "notifier_send_seconds_bucket",
        # lag, outbox, DLQ
        "absch_consumer_lag_messages",
        "absch_outbox_backlog_events",
        "absch_dlq_messages_total",
        # deliveries
        "notifier_mails_sent_total",
        "notifier_mails_failed_total",
        "notifier_mail_retries_total",
        # discrepancies
        "monitor_discrepancies_flagged_total",
    }
    assert wanted - used == set()
    p99 = [e for d in dashboards.values() for _, e in _expressions(d) if "0.99" in e]
    assert any("absch_http_request_seconds_bucket" in e for e in p99)


def test_promql_of_a_grafana_expression() -> None:
    expr = 'sum(increase(x_total{service=~"$service"}[$__range])) / rate(y[${__rate_interval}])'
    assert _promql(expr) == 'sum(increase(x_total{service=~".*"}[5m])) / rate(y[5m])'

"""Prometheus alert rules: promtool accepts config and rules, the rule unit tests pass,
every alert is labelled, annotated and tested both ways, and every series an alert reads
is one the services export.

``promtool`` comes from Debian's ``prometheus`` package (``make sysdeps``); the tests that
run it skip when it is absent and fail instead under CI (``CI`` set).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts.test.yml"

SEVERITIES = {"critical", "warning"}

# Sample names each metric family type writes to /metrics (text format 0.0.4).
SAMPLE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}
# Series Prometheus writes itself for every target.
SCRAPE_SERIES = {
    "up": "gauge",
    "scrape_duration_seconds": "gauge",
    "scrape_samples_scraped": "gauge",
}

_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_NAMES = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)\b(?!\s*\()")


# ---------------------------------------------------------------------------- helpers


def tool_missing(what: str, install: str) -> NoReturn:
    """Skip, or fail under CI, when a needed binary is absent."""
    message = f"{what} is not installed ({install})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must install it")
    pytest.skip(message)


def promtool() -> str:
    """Path of ``promtool``."""
    found = shutil.which("promtool")
    if found is None:
        tool_missing("promtool", "apt-get install -y prometheus")
    return found


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``promtool <args>``; the caller checks the return code."""
    return subprocess.run(
        [promtool(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


def exported_series() -> dict[str, str]:
    """Every series name the services (and the analytics worker) can write to ``/metrics``,
    with its type.

    Built from the metric classes themselves on fresh registries, so a renamed or removed
    metric breaks the alerts and dashboards that use it. Labelled families have no
    samples until first used, so sample names come from the family type.
    """
    from services.checkpoint.context import CheckpointMetrics
    from services.monitor.analytics.metrics import AnalyticsMetrics
    from services.monitor.metrics import MonitorMetrics
    from services.notifier.metrics import NotifierMetrics
    from services.registry.metrics import RegistryMetrics

    series: dict[str, str] = dict(SCRAPE_SERIES)
    for cls in (
        RegistryMetrics,
        CheckpointMetrics,
        NotifierMetrics,
        MonitorMetrics,
        AnalyticsMetrics,
    ):
        registry = CollectorRegistry()
        cls(registry)
        for family in registry.collect():
            for suffix in SAMPLE_SUFFIXES[family.type]:
                series[family.name + suffix] = family.type
    return series


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (Grafana ``$variables`` allowed)."""
    text = _STRINGS.sub('""', expr)
    while _MATCHERS.search(text):
        text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    return {n for n in _NAMES.findall(text) if n.lower() not in _KEYWORDS}


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules of alerts.yml."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _rule_tests() -> Iterator[dict[str, Any]]:
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        yield from case.get("alert_rule_test", [])


# ------------------------------------------------------------------------------ tests


def test_promtool_accepts_the_config_with_its_rule_files() -> None:
    result = run_promtool("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_promtool_accepts_the_alert_rules() -> None:
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_loads_alerts_yml() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert [PROMETHEUS_DIR / f for f in config["rule_files"]] == [ALERTS]
    assert yaml.safe_load(ALERT_TESTS.read_text())["rule_files"] == ["alerts.yml"]


def test_compose_mounts_the_rule_files_next_to_the_config() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(
        v.rsplit(":", 1)[0].split(":", 1)
        for v in compose["services"]["prometheus"]["volumes"]
        if v.startswith("./")
    )
    config_dir = Path(mounts["./deploy/prometheus/prometheus.yml"]).parent
    for rule_file in yaml.safe_load(CONFIG.read_text())["rule_files"]:
        source = f"./{(PROMETHEUS_DIR / rule_file).relative_to(ROOT)}"
        assert mounts.get(source) == str(config_dir / rule_file) or mounts.get(
            "./deploy/prometheus"
        ) == str(config_dir), f"{source} is not mounted in the prometheus container"


def test_the_issue_s_alerts_are_all_there() -> None:
    rules = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    wanted = {
        "AbschTargetDown": "up",
        "AbschConsumerLagHigh": "absch_consumer_lag_messages",
        "AbschDeadLetters": "absch_dlq_messages_total",
        "AbschMailDeliveryFailed": "notifier_mails_failed_total",
        "AbschOutboxBacklog": "absch_outbox_backlog_events",
        "AbschOutboxPublishFailing": "absch_outbox_publish_failures_total",
        "AbschServiceNotReady": "absch_ready",
        "AbschConsumerPollStalled": "absch_consumer_last_poll_timestamp_seconds",
        "AbschConsumerRestarting": "absch_consumer_restarts_total",
        "AbschOutboxAgeing": "absch_outbox_oldest_age_seconds",
        "AbschOutboxDeadLetters": "absch_outbox_dead_letters_total",
        "AbschSmtpUnreachable": "notifier_smtp_up",
        "AbschPeriodicRecordsSkipped": "absch_periodic_records_skipped_total",
        "AbschAnalyticsInputLost": "monitor_analytics_offset_gaps_total",
    }
    for alert, metric in wanted.items():
        assert alert in rules, alert
        assert metric in metric_names(rules[alert]), alert


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules), "alert names must be unique"
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), rule["alert"]
        assert len(annotations["description"]) > len(annotations["summary"]), rule["alert"]


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for check in _rule_tests():
        (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "never shown firing"
    assert names - quiet == set(), "never shown quiet"
    assert firing | quiet <= names, "tests of alerts that do not exist"


def test_every_series_an_alert_reads_is_exported_by_the_services() -> None:
    exported = exported_series()
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported.keys(), (rule["alert"], names - exported.keys())


def test_every_series_of_the_unit_tests_is_exported_by_the_services() -> None:
    exported = exported_series()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for series in case["input_series"]:
            assert metric_names(series["series"]) <= exported.keys(), series["series"]


def test_exported_series_follow_the_family_types() -> None:
    exported = exported_series()
    assert exported["up"] == "gauge"
    assert exported["absch_dlq_messages_total"] == "counter"
    assert "absch_dlq_messages" not in exported
    assert exported["absch_http_request_seconds_bucket"] == "histogram"
    assert exported["notifier_send_seconds_count"] == "histogram"
    assert "notifier_send_seconds" not in exported
    assert exported["absch_consumer_lag_messages"] == "gauge"
    assert exported["monitor_discrepancies_flagged_total"] == "counter"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up == 0", {"up"}),
        (
            'sum by (service, le) (rate(absch_http_request_seconds_bucket{route!~"/metrics|x"}'
            "[$__rate_interval]))",
            {"absch_http_request_seconds_bucket"},
        ),
        (
            "histogram_quantile(0.99, sum(rate(monitor_check_seconds_bucket[5m])) by (le))",
            {"monitor_check_seconds_bucket"},
        ),
        (
            "a_total unless a_total offset 15m or on(service) group_left(topic) b > 1e3",
            {"a_total", "b"},
        ),
        ('sum(x{service=~"$service", topic="by (x)"}) / ignoring(le) y[1h:5m]', {"x", "y"}),
    ],
)
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names

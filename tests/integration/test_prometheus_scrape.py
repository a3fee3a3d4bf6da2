"""The real Prometheus scrapes the real services.

Debian's ``prometheus`` binary runs the scrape jobs of deploy/prometheus/prometheus.yml
(targets moved to the test's loopback ports, every second) and the rules of alerts.yml
against the whole stack and an analytics worker; its HTTP API must show every target up,
each service's key series, every rule evaluated without error and nothing firing, and an
answer to every dashboard expression. Prometheus scrapes each service's metrics listener,
not its public port (which answers 404 for ``/metrics``). ``promtool check metrics`` lints
each service's ``/metrics`` text, and the worker's.

Skips when the binaries are absent, fails instead under CI (``CI`` set).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.test_alerts import ALERTS, CONFIG, promtool, tool_missing
from tests.integration.monitor.analytics.harness import workers
from tests.support.metrics import metrics_url, scrape
from tests.support.poll import eventually
from tests.support.records import authority, permit
from tests.support.registry import government_users, publish
from tests.support.stack import Stack, running_stack
from tools.ports import free_port
from tools.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
SERVICES = ("registry", "checkpoint", "notifier", "monitor")
# Scraped too: the analytics worker, on its faust web port.
JOBS = {*SERVICES, "analytics", "prometheus"}

# Each service's key series after the workload below: PromQL -> number of result series.
KEY_SERIES = {
    'up{job=~"registry|checkpoint|notifier|monitor"} == 1': 4,
    'sum by (service) (absch_http_requests_total{service=~".+"})': 4,
    'absch_http_request_seconds_count{service="registry", route="/v1/users"}': 1,
    'absch_events_published_total{service="registry", topic=~".*directory.*"} >= 1': 1,
    'absch_events_published_total{service="registry", topic=~".*ircc.*"} >= 1': 1,
    'registry_publications_total{schema="absPermit"} >= 1': 1,
    'absch_events_consumed_total{service="checkpoint", outcome="ok"}': 1,
    'sum(absch_events_consumed_total{service="notifier", outcome="ok"}) >= 3': 1,
    "sum(notifier_mails_queued_total) >= 1": 1,
    "sum(notifier_mails_sent_total) >= 1": 1,
    'monitor_events_seen_total{type="ircc.published"} == 1': 1,
    "count by (service) (absch_consumer_lag_messages)": 3,  # registry consumes nothing
    "count by (service) (absch_outbox_backlog_events)": 4,
    'up{job="analytics", service="analytics"} == 1': 1,
    'monitor_analytics_parked_total{service="analytics"}': 1,
}
# Dashboard panels that must show data after the workload.
PANELS_WITH_DATA = {
    "Services up",
    "Events consumed by service and topic",
    "Events published by service and topic",
    "HTTP requests by service and status",
    "HTTP latency p50 / p99 by service",
    "Event handling p50 / p99 by service and topic",
    "Consumer lag by service and topic",
    "Outbox backlog by service",
    "Mails sent / failed / retried by template",
    "Monitor events seen by type",
}
# `promtool check metrics` findings accepted, each with its reason. None so far.
ACCEPTED_LINT: dict[str, str] = {}


@pytest.fixture
def db_backend() -> str:
    """SQLite only: what Prometheus sees does not depend on the database."""
    return "sqlite"


def _prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        tool_missing("prometheus", "apt-get install -y prometheus")
    return found


def _scrape_config(stack: Stack, own_port: int, analytics_port: int) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with loopback targets, 1 s intervals and the rules."""
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS)]
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name in SERVICES:
            url = httpx.URL(metrics_url(getattr(stack, name)))
            target = f"{url.host}:{url.port}"
        elif name == "analytics":
            target = f"127.0.0.1:{analytics_port}"
        else:
            target = f"127.0.0.1:{own_port}"
        for static in job["static_configs"]:
            static["targets"] = [target]
    assert {job["job_name"] for job in config["scrape_configs"]} == JOBS
    return config


@contextlib.asynccontextmanager
async def _prometheus(
    binary: str, config: dict[str, Any], port: int, tmp: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """Run Prometheus on ``127.0.0.1:port``; yields a client of its HTTP API."""
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    log_path = tmp / "prometheus.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as api:

                async def ready() -> bool:
                    if process.returncode is not None:
                        tail = log_path.read_text(errors="replace")[-3000:]
                        raise AssertionError(f"prometheus exited:\n{tail}")
                    with contextlib.suppress(httpx.TransportError):
                        return (await api.get("/-/ready")).status_code == 200
                    return False

                await eventually(ready, timeout=15, what="prometheus ready")
                yield api
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 15)
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def _query(api: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    """Instant query; asserts that Prometheus accepted it."""
    resp = await api.get("/api/v1/query", params={"query": expr})
    body = resp.json()
    assert resp.status_code == 200, (expr, body)
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _dashboard_expressions() -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` of every dashboard target, Grafana variables replaced."""
    out = []
    for path in sorted(DASHBOARDS.glob("**/*.json")):
        for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]:
            for target in panel.get("targets", []):
                expr = re.sub(r"\$\{?__(rate_interval|interval)\}?", "30s", target["expr"])
                expr = re.sub(r"\$\{?__range\}?", "5m", expr)
                out.append((panel["title"], re.sub(r"\$\{?\w+\}?", ".*", expr)))
    return out


async def _lint(text: str) -> list[str]:
    """``promtool check metrics`` findings for one exposition (empty when clean)."""
    process = await asyncio.create_subprocess_exec(
        promtool(),
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(text.encode()), 30)
    findings = out.decode().strip()
    assert process.returncode in (0, 3), findings  # 3: lint findings, listed in the output
    return [line for line in findings.splitlines() if line.strip()]


async def _workload(stack: Stack, smtp: SmtpSink) -> None:
    """A CNA and an IRCC published, mailed to the CNA, seen by monitor and checkpoint;
    every service probed for readiness, as a load balancer does (scrapes are no HTTP
    requests of the public app any more, so each service's request series comes from this)."""
    for name in SERVICES:
        assert (await getattr(stack, name).get("/readyz")).status_code == 200, name
    users = await government_users(stack.registry, "mx")
    cna = authority("mx", ["cna@mx.example"])
    await publish(stack.registry, users["pa"], cna)
    await publish(stack.registry, users["pa"], permit("mx", cna["header"]["identifier"]))
    await eventually(lambda: smtp.mails_to("cna@mx.example"), what="mail to the CNA")


async def test_prometheus_scrapes_every_service_and_evaluates_the_rules(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path, smtp: SmtpSink
) -> None:
    binary = _prometheus_binary()
    promtool()
    async with (
        running_stack(
            kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path, smtp=smtp
        ) as stack,
        workers(kafka_bootstrap, topic_prefix, tmp_path) as (analytics,),
    ):
        port = free_port()
        config = _scrape_config(stack, port, analytics.port)
        async with _prometheus(binary, config, port, tmp_path) as api:

            async def all_up() -> list[dict[str, Any]]:
                targets = (await api.get("/api/v1/targets")).json()["data"]["activeTargets"]
                up = [t for t in targets if t["health"] == "up"]
                return targets if len(up) == len(targets) == len(JOBS) else []

            targets = await eventually(all_up, timeout=20, what="every target up")
            assert {t["labels"]["job"] for t in targets} == JOBS
            for target in targets:
                assert target["labels"].get("service", "prometheus") == target["labels"]["job"]

            await _workload(stack, smtp)

            for expr, count in KEY_SERIES.items():

                async def scraped(expr: str = expr, count: int = count) -> bool:
                    return len(await _query(api, expr)) == count

                await eventually(scraped, timeout=15, what=f"{expr} ({count} series)")

            # Every rule of alerts.yml loaded and evaluated without error; nothing fires
            # (AbschConsumerStalled may be pending for a moment while the first message of
            # a topic waits, before its consumed counter exists).
            async def rules_evaluated() -> list[dict[str, Any]]:
                groups = (await api.get("/api/v1/rules")).json()["data"]["groups"]
                rules = [r for g in groups for r in g["rules"]]
                done = all(r["health"] == "ok" and r["evaluationTime"] > 0 for r in rules)
                return rules if rules and done else []

            rules = await eventually(rules_evaluated, timeout=15, what="rules evaluated")
            alerts = {r["name"] for r in rules}
            assert {"AbschTargetDown", "AbschDeadLetters", "AbschMailDeliveryFailed"} <= alerts
            assert [r["name"] for r in rules if r["state"] == "firing"] == []

            # Every dashboard expression is answered; the key panels have data once rate()
            # has two samples of the series born during the workload.
            missing = set(PANELS_WITH_DATA)

            async def key_panels_have_data() -> bool:
                answered: dict[str, int] = {}
                for title, expr in _dashboard_expressions():
                    answered[title] = answered.get(title, 0) + len(await _query(api, expr))
                missing.intersection_update(t for t in PANELS_WITH_DATA if not answered.get(t))
                return not missing

            try:
                await eventually(key_panels_have_data, timeout=15, what="key panels with data")
            except AssertionError as exc:
                raise AssertionError(f"no data in {sorted(missing)}") from exc

        # promtool check metrics on each service's real /metrics text, from its listener;
        # the public port has no /metrics.
        unexpected: dict[str, list[str]] = {}
        for name in SERVICES:
            public = await getattr(stack, name).get("/metrics")
            assert public.status_code == 404, (name, public.text)
            text = await scrape(getattr(stack, name))
            findings = [f for f in await _lint(text) if f not in ACCEPTED_LINT]
            if findings:
                unexpected[name] = findings
        findings = [f for f in await _lint(await analytics.metrics()) if f not in ACCEPTED_LINT]
        if findings:
            unexpected["analytics"] = findings
        assert unexpected == {}

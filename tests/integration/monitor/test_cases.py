"""Discrepancy cases: who sees them, how they are worked, and the dashboard that counts them."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.events import topic_name
from tests.integration.monitor.test_rules import cpc
from tests.support.browser import render_dom
from tests.support.kafka import TopicReader
from tests.support.metrics import scrape
from tests.support.poll import eventually
from tests.support.records import authority, checkpoint, permit
from tests.support.registry import ADMIN_TOKEN, auth, create_user, government_users, publish
from tests.support.stack import Stack, running_stack, submit
from tools.smtp_sink import SmtpSink


@dataclass
class World:
    stack: Stack
    mx: dict[str, str]
    de: dict[str, str]
    admin: str
    cpc_uid: str
    kafka: str
    prefix: str
    profile: Path


@pytest.fixture
async def world(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path, smtp: SmtpSink
) -> AsyncIterator[World]:
    """A revoked IRCC cited by a CPC: one open IRCC_REVOKED case for Mexico."""
    async with running_stack(
        kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path, smtp=smtp
    ) as stack:
        reg = stack.registry
        mx, de = await government_users(reg, "mx"), await government_users(reg, "de")
        admin = await create_user(reg, ADMIN_TOKEN, "admin")
        cna = authority("mx", ["cna@mx.example"])
        await publish(reg, mx["pa"], cna)
        ircc = permit("mx", cna["header"]["identifier"])
        await publish(reg, mx["pa"], ircc)
        resp = await reg.post(
            f"/v1/records/absPermit/{ircc['header']['identifier']}/revoke",
            json={"reason": {"en": "withdrawn"}},
            headers=auth(mx["pa"]),
        )
        assert resp.status_code == 200, resp.text
        cp = checkpoint("de")
        await publish(reg, de["pa"], cp)
        operator = await create_user(
            reg, de["pa"], "checkpoint", "de", checkpoint=cp["header"]["identifier"]
        )
        uid = await submit(
            stack,
            operator,
            cpc("de", cp["header"]["identifier"], irccs=[ircc["header"]["identifier"]]),
        )
        yield World(
            stack, mx, de, admin, uid, kafka_bootstrap, topic_prefix, tmp_path / "chrome-profile"
        )


async def _cases(w: World, token: str, **params: str) -> dict[str, Any]:
    resp = await w.stack.monitor.get("/v1/discrepancies", params=params, headers=auth(token))
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_cases_are_seen_and_worked_by_the_provider_country_only(world: World) -> None:
    w = world
    page = await eventually(lambda: _has_case(w), what="a case for Mexico")
    case = page["items"][0]
    assert (case["rule"], case["cpc_uid"], case["provider_country"], case["user_country"]) == (
        "IRCC_REVOKED",
        w.cpc_uid,
        "mx",
        "de",
    )
    assert case["status"] == "open"
    assert (await _cases(w, w.de["nfp"]))["total"] == 0
    hidden = await w.stack.monitor.get(f"/v1/discrepancies/{case['id']}", headers=auth(w.de["nfp"]))
    assert hidden.status_code == 404
    assert (await _cases(w, w.admin))["total"] == 1
    for params, total in (
        ({"rule": "IRCC_REVOKED"}, 1),
        ({"rule": "NO_EVIDENCE"}, 0),
        ({"status": "open"}, 1),
        ({"status": "resolved"}, 0),
        ({"user": "DE"}, 1),
        ({"provider": "br"}, 0),
    ):
        assert (await _cases(w, w.admin, **params))["total"] == total, params
    bad = await w.stack.monitor.get(
        "/v1/discrepancies", params={"status": "lost"}, headers=auth(w.admin)
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "status"
    assert (await w.stack.monitor.get("/v1/discrepancies")).status_code == 401

    url = f"/v1/discrepancies/{case['id']}"
    pa = await w.stack.monitor.post(f"{url}/acknowledge", headers=auth(w.mx["pa"]))
    assert pa.status_code == 403
    other = await w.stack.monitor.post(f"{url}/acknowledge", headers=auth(w.de["cna"]))
    assert other.status_code == 404
    ack = await w.stack.monitor.post(f"{url}/acknowledge", headers=auth(w.mx["cna"]))
    assert ack.json()["status"] == "acknowledged"
    again = await w.stack.monitor.post(f"{url}/acknowledge", headers=auth(w.mx["cna"]))
    assert again.status_code == 409
    no_note = await w.stack.monitor.post(f"{url}/resolve", headers=auth(w.mx["nfp"]))
    assert no_note.status_code == 409
    done = await w.stack.monitor.post(
        f"{url}/resolve", json={"note": "user holds a new PIC"}, headers=auth(w.mx["nfp"])
    )
    assert done.json()["status"] == "resolved"
    reopened = await w.stack.monitor.post(
        f"{url}/reopen", json={"note": "PIC doubtful"}, headers=auth(w.mx["cna"])
    )
    assert reopened.json()["status"] == "open"
    history = reopened.json()["history"]
    assert [h["action"] for h in history] == ["flagged", "acknowledge", "resolve", "reopen"]

    topic = topic_name("absch.discrepancy.v1", w.prefix)
    async with TopicReader(w.kafka, topic) as reader:
        events = await reader.read_until(
            lambda evs: sum(e.type == "discrepancy.case_updated" for e in evs) >= 3
        )
    updates = [(e.data.status, e.data.note) for e in events if e.type == "discrepancy.case_updated"]
    assert updates == [
        ("acknowledged", None),
        ("resolved", "user holds a new PIC"),
        ("open", "PIC doubtful"),
    ]


async def _has_case(w: World) -> dict[str, Any] | None:
    page = await _cases(w, w.mx["cna"])
    return page if page["total"] else None


@pytest.mark.skipif(
    shutil.which("chromium") is None and not os.environ.get("CI"),
    reason="Debian's chromium not installed (CI installs it and never skips)",
)
async def test_dashboard_shows_live_numbers_in_a_real_browser(world: World) -> None:
    """Without a token the page shows the sign-in form and no number; with an operator's
    token (handed over in the fragment, as the form would store it) the live numbers."""
    w = world
    await eventually(lambda: _has_case(w), what="case listed")
    url = str(w.stack.monitor.base_url).rstrip("/") + "/dashboard"

    signed_out = await render_dom(url, w.profile)
    assert re.search(r'<form id="sign-in">', signed_out), signed_out  # shown: not hidden
    assert 'data-loaded="true"' not in signed_out
    assert 'id="numbers" hidden' in signed_out
    assert "IRCC_REVOKED" not in signed_out

    operator = await create_user(w.stack.registry, w.admin, "operator")
    dom = await render_dom(f"{url}#token={operator}", w.profile)
    assert 'data-loaded="true"' in dom, dom
    rule_row = re.search(r'data-key="IRCC_REVOKED"><td>IRCC_REVOKED</td><td class="n">(\d+)', dom)
    assert rule_row is not None
    assert rule_row.group(1) == "1"
    country_row = re.search(r'data-key="mx"><td>mx</td><td class="n">(\d+)', dom)
    assert country_row is not None
    assert country_row.group(1) == "1"
    assert re.search(r'id="failed"[^>]*>0<', dom)
    assert re.search(r'data-key="cpc.published"><td>cpc.published</td>', dom)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_monitor_metrics_count_checks_rules_latency_tables_and_lag(world: World) -> None:
    w = world
    await eventually(lambda: _has_case(w), what="case listed")

    async def tables_reported() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        samples = _samples(await scrape(w.stack.monitor))
        groups = {
            dict(labels)["group"]
            for name, labels in samples
            if name == "absch_consumer_lag_messages" and dict(labels)["service"] == "monitor"
        }
        ready = ("monitor_table_keys", (("table", "irccs"),)) in samples and len(groups) == 3
        return samples if ready else None

    samples = await eventually(tables_reported, what="the timer reported table sizes")
    assert samples[("monitor_cpcs_checked_total", ())] == 1
    assert samples[("monitor_citations_checked_total", ())] == 1
    assert samples[("monitor_discrepancies_flagged_total", (("rule", "IRCC_REVOKED"),))] == 1
    assert samples[("monitor_check_seconds_count", ())] >= 2
    lag_groups = {
        dict(labels)["group"]
        for name, labels in samples
        if name == "absch_consumer_lag_messages" and dict(labels)["service"] == "monitor"
    }
    # The checking consumer's group, the case projection's, and the directory view's
    # (which reads without a Kafka group; the label names it all the same).
    assert lag_groups == {
        f"{w.prefix}absch-monitor",
        f"{w.prefix}absch-monitor-cases",
        f"{w.prefix}absch-monitor-directory",
    }

"""The delivery log (``GET /v1/deliveries?subject=``) and the notifier's ``/metrics``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from shared.events import Topic, topic_name
from tests.support.mail import deliveries, metric, samples, wait_all_sent
from tests.support.metrics import scrape
from tests.support.notifier import country_with_authorities, running_notifier_stack
from tests.support.poll import eventually
from tests.support.records import permit
from tests.support.registry import auth, publish
from tools.smtp_sink import SmtpSink


async def test_delivery_log_by_uid_and_metrics(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path, smtp: SmtpSink
) -> None:
    async with running_notifier_stack(
        kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path, smtp=smtp
    ) as stack:
        mx = await country_with_authorities(stack, "mx")
        token, client = mx.users["cna"], stack.notifier
        record = permit("mx", mx.cna)
        first = (await publish(stack.registry, mx.users["pa"], record))["uid"]
        await wait_all_sent(client, token, first, "ircc_published")
        record["amendmentDescription"] = {"en": "corrected title"}
        second = (await publish(stack.registry, mx.users["pa"], record))["uid"]
        await wait_all_sent(client, token, second, "ircc_amended")
        permanent = first.rsplit("-", 1)[0]
        assert second == f"{permanent}-2"

        async def log(subject: str, **params: str) -> set[tuple[str, str, str]]:
            rows = await deliveries(client, token, subject, **params)
            return {(str(r["subject"]), str(r["template"]), str(r["recipient"])) for r in rows}

        everyone = {mx.cna_address, mx.nfp_address}
        assert await log(first) == {(first, "ircc_published", a) for a in everyone}
        assert await log(second) == {(second, "ircc_amended", a) for a in everyone}
        assert await log(permanent) == await log(first) | await log(second)
        assert await log(permanent.lower()) == await log(permanent)
        assert await log(first, status="sent") == await log(first)
        assert await log(first, status="failed") == set()
        assert await log(permanent.replace("-", "_")) == set()  # no LIKE wildcards
        assert await log(f"{permanent}9") == set()
        # A prefix names no subject: "ABSCH" used to list every delivery in the system.
        for prefix in ("ABSCH", "ABSCH-IRCC", "ABSCH-IRCC-MX", permanent[:-1]):
            assert await log(prefix) == set(), prefix
        rows = await deliveries(client, token, first)
        assert all(r["attempts"] == 1 and r["sent_at"] and r["language"] == "en" for r in rows)

        for headers in ({}, auth("not-a-token")):
            resp = await client.get("/v1/deliveries", params={"subject": first}, headers=headers)
            assert resp.status_code == 401
            assert resp.headers["content-type"].startswith("application/problem+json")
        assert (await client.get("/v1/deliveries", headers=auth(token))).status_code == 422
        junk = await client.get("/v1/deliveries", params={"subject": "a\x00"}, headers=auth(token))
        assert junk.status_code == 422

        await _assert_mail_metrics(client)
        await _assert_no_lag(client, topic_name(Topic.IRCC, topic_prefix))


async def _assert_mail_metrics(client: httpx.AsyncClient) -> None:
    """Sent, queued, failed and retried per template, the latency histogram, the backlog."""
    text = await scrape(client)
    for template, sent in (("ircc_published", 2), ("ircc_amended", 2), ("cpc_published", 0)):
        assert metric(text, "notifier_mails_sent_total", template=template) == sent
        assert metric(text, "notifier_mails_queued_total", template=template) == sent
        assert metric(text, "notifier_mails_failed_total", template=template) == 0
        assert metric(text, "notifier_mail_retries_total", template=template) == 0
    assert metric(text, "notifier_send_seconds_count") == 4
    assert metric(text, "notifier_send_seconds_bucket", le="+Inf") == 4
    assert metric(text, "notifier_deliveries_pending") == 0


async def _assert_no_lag(client: httpx.AsyncClient, topic: str) -> None:
    """``absch_consumer_lag_messages`` is reported for the topic's partitions and drops to 0."""

    async def caught_up() -> list[dict[str, str]] | None:
        text = await scrape(client)
        lag = [s for s in samples(text, "absch_consumer_lag_messages") if s["topic"] == topic]
        values = [metric(text, "absch_consumer_lag_messages", **s) for s in lag]
        return lag if lag and all(v == 0 for v in values) else None

    lag = await eventually(caught_up, what="consumer lag reported and zero")
    assert {s["service"] for s in lag} == {"notifier"}

"""SMTP trouble: a temporary outage is retried until every mail arrives once; a refused
address fails for good, with ``notification.failed`` and a dead letter naming the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.events import Topic, dlq_name, topic_name
from tests.support.kafka import TopicReader
from tests.support.mail import (
    deliveries,
    mails_about,
    metric,
    wait_all_sent,
)
from tests.support.notifier import country_with_authorities, running_notifier_stack
from tests.support.poll import eventually
from tests.support.records import contact, permit
from tests.support.registry import publish
from tools.smtp_sink import SmtpSink

FAST_RETRIES: dict[str, Any] = {
    "retry_base_seconds": 0.05,
    "retry_max_seconds": 0.2,
    "max_attempts": 200,
}


async def test_mails_wait_out_an_smtp_outage_and_arrive_once(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path, smtp: SmtpSink
) -> None:
    async with running_notifier_stack(
        kafka=kafka_bootstrap,
        prefix=topic_prefix,
        db_url=db_url,
        tmp=tmp_path,
        smtp=smtp,
        **FAST_RETRIES,
    ) as stack:
        mx = await country_with_authorities(stack, "mx")
        token = mx.users["cna"]
        smtp.refusing = True
        uid = (await publish(stack.registry, mx.users["pa"], permit("mx", mx.cna)))["uid"]

        async def retrying() -> list[dict[str, Any]] | None:
            rows = await deliveries(stack.notifier, token, uid)
            ok = len(rows) == 2 and all(
                r["status"] == "pending" and int(str(r["attempts"])) > 1 and r["last_error"]
                for r in rows
            )
            return rows if ok else None

        rows = await eventually(retrying, what="deliveries retrying")
        assert all(str(r["last_error"]).startswith("451") for r in rows)
        text = (await stack.notifier.get("/metrics")).text
        assert (metric(text, "notifier_mail_retries_total", template="ircc_published") or 0) > 0
        assert metric(text, "notifier_mails_sent_total", template="ircc_published") == 0
        assert smtp.mails == []

        smtp.refusing = False
        sent = await wait_all_sent(stack.notifier, token, uid, "ircc_published")
        assert sent == {mx.cna_address, mx.nfp_address}
        mails = mails_about(smtp, subject=uid)
        assert sorted(m.recipient for m in mails) == sorted(sent)
        text = (await stack.notifier.get("/metrics")).text
        assert metric(text, "notifier_mails_sent_total", template="ircc_published") == 2
        assert metric(text, "notifier_mails_failed_total", template="ircc_published") == 0

        topic = topic_name(Topic.NOTIFICATION, topic_prefix)
        async with TopicReader(kafka_bootstrap, topic) as reader:
            events = await reader.read_until(lambda evs: len(evs) >= 2)
        assert {(e.type, e.data.recipient) for e in events} == {
            ("notification.delivered", mx.cna_address),
            ("notification.delivered", mx.nfp_address),
        }
        assert all(e.data.attempts > 1 and e.data.subject == uid for e in events)


async def test_a_refused_address_fails_for_good_and_is_dead_lettered(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path, smtp: SmtpSink
) -> None:
    async with running_notifier_stack(
        kafka=kafka_bootstrap,
        prefix=topic_prefix,
        db_url=db_url,
        tmp=tmp_path,
        smtp=smtp,
        **FAST_RETRIES,
    ) as stack:
        gone = "gone@holder.example"
        holder = contact([gone])
        mx = await country_with_authorities(stack, "mx", holder)
        smtp.rejected.add(gone)
        record = permit("mx", mx.cna, pic_holders=[holder["header"]["identifier"]])
        uid = (await publish(stack.registry, mx.users["pa"], record))["uid"]

        async def settled() -> dict[str, dict[str, Any]] | None:
            rows = await deliveries(stack.notifier, mx.users["cna"], uid)
            done = len(rows) == 3 and all(r["status"] != "pending" for r in rows)
            return {str(r["recipient"]): r for r in rows} if done else None

        rows = await eventually(settled, what="deliveries settled")
        assert {a: r["status"] for a, r in rows.items()} == {
            mx.cna_address: "sent",
            mx.nfp_address: "sent",
            gone: "failed",
        }
        assert rows[gone]["attempts"] == 1
        assert str(rows[gone]["last_error"]).startswith("550")
        assert [m.recipient for m in mails_about(smtp, subject=uid) if m.recipient == gone] == []

        topic = topic_name(Topic.NOTIFICATION, topic_prefix)
        async with TopicReader(kafka_bootstrap, topic) as reader:
            events = await reader.read_until(lambda evs: len(evs) >= 3)
        failed = [e for e in events if e.type == "notification.failed"]
        assert [(e.data.recipient, e.data.template) for e in failed] == [(gone, "ircc_published")]
        async with TopicReader(kafka_bootstrap, dlq_name(topic)) as reader:
            dead = await reader.read_until(lambda evs: len(evs) >= 1)
        assert dead[0].data.recipient == gone
        assert dead[0].data.event_id == failed[0].data.event_id
        assert "550" in str(dead[0].data.error)
        text = (await stack.notifier.get("/metrics")).text
        assert metric(text, "notifier_mails_failed_total", template="ircc_published") == 1
        assert metric(text, "notifier_mails_sent_total", template="ircc_published") == 2

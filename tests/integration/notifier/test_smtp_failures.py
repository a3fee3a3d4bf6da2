"""SMTP trouble: a temporary outage is retried until every mail arrives once, however long
an unreachable server stays away; a 4xx is retried for the soft-bounce budget; a refused
address (5xx) fails for good at once, with ``notification.failed`` and a dead letter naming
the reason."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.notifier.adapters.tables import DeliveryRow
from shared.events import Topic, dlq_name, topic_name
from tests.integration.notifier.test_delivery_claims import (
    add_deliveries,
    delivery,
    outcomes,
    pending_delivery,
    worker_of,
)
from tests.support.kafka import TopicReader
from tests.support.mail import (
    deliveries,
    mails_about,
    metric,
    wait_all_sent,
)
from tests.support.metrics import scrape
from tests.support.notifier import (
    FakeClock,
    RunningNotifier,
    country_with_authorities,
    notifier_settings,
    running_notifier,
    running_notifier_stack,
)
from tests.support.poll import eventually
from tests.support.records import contact, permit
from tests.support.registry import publish
from tools.smtp_sink import SmtpSink

FAST_RETRIES: dict[str, Any] = {"retry_base_seconds": 0.05, "retry_max_seconds": 0.2}
# Longer than any delay between two attempts (retry_max_seconds, 60 by default).
PAST_NEXT_ATTEMPT = 61.0
TEMPLATE = "ircc_published"


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
        text = await scrape(stack.notifier)
        assert (metric(text, "notifier_mail_retries_total", template="ircc_published") or 0) > 0
        assert metric(text, "notifier_mails_sent_total", template="ircc_published") == 0
        assert smtp.mails == []

        smtp.refusing = False
        sent = await wait_all_sent(stack.notifier, token, uid, "ircc_published")
        assert sent == {mx.cna_address, mx.nfp_address}
        mails = mails_about(smtp, subject=uid)
        assert sorted(m.recipient for m in mails) == sorted(sent)
        text = await scrape(stack.notifier)
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
        text = await scrape(stack.notifier)
        assert metric(text, "notifier_mails_failed_total", template="ircc_published") == 1
        assert metric(text, "notifier_mails_sent_total", template="ircc_published") == 2


async def _attempted_again(
    notifier: RunningNotifier, clock: FakeClock, row_id: int, after: int, **advance: float
) -> DeliveryRow:
    """Move the clock on (past the next attempt), and wait for that attempt."""
    clock.advance(**(advance or {"seconds": PAST_NEXT_ATTEMPT}))
    worker_of(notifier.app).wake()

    async def attempted() -> DeliveryRow | None:
        row = await delivery(notifier.ctx, row_id)
        return row if row.attempts > after else None

    row: DeliveryRow = await eventually(attempted, what=f"attempt {after + 1}")
    return row


async def _metrics(notifier: RunningNotifier) -> str:
    return await scrape(notifier.client)


async def _gauges(notifier: RunningNotifier, *, smtp_up: float, oldest_age: float) -> str:
    """Wait for a round that set the gauges to these values (the clock stands still)."""

    async def settled() -> str | None:
        text = await _metrics(notifier)
        age = metric(text, "notifier_oldest_pending_delivery_age_seconds")
        return text if (metric(text, "notifier_smtp_up"), age) == (smtp_up, oldest_age) else None

    text: str = await eventually(settled, what=f"smtp_up {smtp_up}, oldest age {oldest_age}")
    return text


async def _smtp_check(notifier: RunningNotifier, *, passes: bool) -> None:
    """``/readyz`` names the SMTP server's state (evaluated in the background)."""

    async def settled() -> bool:
        resp = await notifier.client.get("/readyz")
        body = resp.json()
        if body["checks"].get("smtp") is not passes:
            return False
        return passes or (resp.status_code == 503 and "unreachable" in body["details"]["smtp"])

    await eventually(settled, what=f"the smtp readiness check {'passes' if passes else 'fails'}")


async def test_an_unreachable_server_is_waited_out_however_long_it_stays_away(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path
) -> None:
    # Not listening until the end: every connection is refused meanwhile.
    sink = SmtpSink(maildir=tmp_path / "mail")
    settings = notifier_settings(
        kafka=kafka_bootstrap, prefix=topic_prefix, db=await db_url("notifier"), smtp=sink
    )
    clock = FakeClock(datetime.now(UTC))
    async with running_notifier(settings, clock=clock) as notifier:
        created = clock()
        (row_id,) = await add_deliveries(
            notifier.ctx, [pending_delivery("evt-outage", "cna@down.example", created)]
        )
        row = await _attempted_again(notifier, clock, row_id, 0, seconds=0)
        # Far past the old budget (8 attempts, about two minutes), then three days more.
        for _ in range(11):
            assert row.status == "pending", row.last_error
            row = await _attempted_again(notifier, clock, row_id, row.attempts)
        row = await _attempted_again(notifier, clock, row_id, row.attempts, days=3)
        assert (row.status, row.attempts, row.deferred_since) == ("pending", 13, None)
        assert "connect" in str(row.last_error).lower(), row.last_error
        age = (clock() - created).total_seconds()
        assert age > 3 * 86400
        text = await _gauges(notifier, smtp_up=0, oldest_age=age)
        assert metric(text, "notifier_deliveries_pending") == 1
        assert metric(text, "notifier_mail_retries_total", template=TEMPLATE) == 13
        assert metric(text, "notifier_mails_failed_total", template=TEMPLATE) == 0
        await _smtp_check(notifier, passes=False)

        sink.start()
        try:
            row = await _attempted_again(notifier, clock, row_id, row.attempts)
            assert (row.status, row.attempts, row.last_error) == ("sent", 14, None)
            text = await _gauges(notifier, smtp_up=1, oldest_age=0)
            await _smtp_check(notifier, passes=True)
            events = await outcomes(notifier.ctx)
        finally:
            sink.stop()
    assert [m.recipient for m in sink.mails] == ["cna@down.example"]
    assert metric(text, "notifier_deliveries_pending") == 0
    assert metric(text, "notifier_mails_sent_total", template=TEMPLATE) == 1
    assert [(e["type"], e["data"]["attempts"]) for e in events] == [("notification.delivered", 14)]


async def test_a_4xx_is_retried_for_the_soft_bounce_budget_then_fails(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, smtp: SmtpSink
) -> None:
    settings = notifier_settings(
        kafka=kafka_bootstrap, prefix=topic_prefix, db=await db_url("notifier"), smtp=smtp
    )
    budget = settings.soft_bounce_seconds
    clock = FakeClock(datetime.now(UTC))
    smtp.refusing = True  # 451 to every recipient
    async with running_notifier(settings, clock=clock) as notifier:
        first = clock()
        (row_id,) = await add_deliveries(
            notifier.ctx, [pending_delivery("evt-4xx", "cna@busy.example", first)]
        )
        row = await _attempted_again(notifier, clock, row_id, 0, seconds=0)
        for _ in range(9):  # more than the old eight attempts
            row = await _attempted_again(notifier, clock, row_id, row.attempts)
        assert row.status == "pending"
        assert str(row.last_error).startswith("451")
        assert row.deferred_since is not None
        assert row.deferred_since.replace(tzinfo=UTC) == first
        row = await _attempted_again(notifier, clock, row_id, row.attempts, seconds=budget - 3600)
        assert (row.status, row.attempts) == ("pending", 11)
        await _gauges(notifier, smtp_up=1, oldest_age=(clock() - first).total_seconds())

        row = await _attempted_again(notifier, clock, row_id, row.attempts, seconds=3600)
        assert (row.status, row.attempts) == ("failed", 12)
        events = await outcomes(notifier.ctx)
        text = await _metrics(notifier)
    assert smtp.mails == []
    assert [(e["type"], e["data"]["attempts"]) for e in events] == [("notification.failed", 12)]
    assert str(events[0]["data"]["error"]).startswith("451")
    assert metric(text, "notifier_mails_failed_total", template=TEMPLATE) == 1
    assert metric(text, "notifier_mail_retries_total", template=TEMPLATE) == 11

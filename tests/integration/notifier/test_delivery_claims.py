"""Delivery workers of several notifier instances share one database: every (event,
address) is mailed exactly once, and the rows of a worker that died holding a claim are
taken over once the claim has expired."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select

from services.notifier.adapters.tables import DeliveryRow, OutboxRow
from services.notifier.context import NotifierContext
from services.notifier.delivery import DeliveryWorker
from shared.events import Topic
from tests.support.mail import assert_one_mail_per_event_and_address, metric
from tests.support.metrics import scrape
from tests.support.notifier import FakeClock, notifier_settings, running_notifier
from tests.support.poll import eventually
from tools.smtp_sink import SmtpSink

BACKLOG_EVENTS, ADDRESSES_PER_EVENT = 20, 10
SENT = "notifier_mails_sent_total"


def pending_delivery(event_id: str, recipient: str, now: datetime, **columns: Any) -> DeliveryRow:
    """A due delivery, as the handlers write it (plus any ``columns`` given)."""
    values: dict[str, Any] = {
        "event_id": event_id,
        "event_type": "ircc.published",
        "subject": f"ABSCH-IRCC-MX-{event_id}-1",
        "recipient": recipient,
        "role": "absCNA",
        "template": "ircc_published",
        "language": "en",
        "mail_subject": f"IRCC published ({event_id})",
        "text_body": "An IRCC was published.",
        "html_body": "<p>An IRCC was published.</p>",
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    } | columns
    return DeliveryRow(**values)


async def add_deliveries(ctx: NotifierContext, rows: Sequence[DeliveryRow]) -> list[int]:
    """Insert rows straight into the notifier's database, in one transaction; their ids."""
    async with ctx.sessions.begin() as session:
        session.add_all(rows)
        await session.flush()
        return [row.id for row in rows]


async def delivery(ctx: NotifierContext, row_id: int) -> DeliveryRow:
    """A delivery row as committed now."""
    async with ctx.sessions() as session:
        row = await session.get(DeliveryRow, row_id)
        assert row is not None
        return row


async def outcomes(ctx: NotifierContext) -> list[dict[str, Any]]:
    """The notification events staged in the outbox (not the DLQ copies), oldest first."""
    topic = ctx.topic(Topic.NOTIFICATION)
    async with ctx.sessions() as session:
        payloads = await session.scalars(
            select(OutboxRow.payload).where(OutboxRow.topic == topic).order_by(OutboxRow.id)
        )
        return [json.loads(p) for p in payloads]


def worker_of(app: FastAPI) -> DeliveryWorker:
    """The delivery worker of a running notifier app."""
    worker: DeliveryWorker = app.state.worker
    return worker


async def test_two_instances_drain_a_backlog_mailing_each_pair_once(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, db_backend: str, smtp: SmtpSink
) -> None:
    db = await db_url("notifier")

    def settings(instance: str) -> Any:
        return notifier_settings(
            kafka=kafka_bootstrap, prefix=topic_prefix, db=db, smtp=smtp, instance_id=instance
        )

    # Started one after the other: the first creates the tables.
    async with running_notifier(settings("a")) as a, running_notifier(settings("b")) as b:
        now = datetime.now(UTC)
        backlog = [
            pending_delivery(f"evt-{e}", f"person{n}@claims{e}.example", now)
            for e in range(BACKLOG_EVENTS)
            for n in range(ADDRESSES_PER_EVENT)
        ]
        ids = await add_deliveries(a.ctx, backlog)
        workers = [worker_of(a.app), worker_of(b.app)]
        for worker in workers:
            worker.wake()
        total = len(backlog)
        await eventually(lambda: len(smtp.mails) >= total, timeout=60, what="every mail")

        async def all_recorded() -> list[DeliveryRow] | None:
            rows = [await delivery(a.ctx, i) for i in ids]
            return rows if all(r.status == "sent" for r in rows) else None

        rows = await eventually(all_recorded, what="every delivery recorded as sent")
        sent_by = Counter(r.claimed_by for r in rows)
        per_app = [metric(await scrape(n.client), SENT, template="ircc_published") for n in (a, b)]
        events = [e for e in await outcomes(a.ctx) if e["type"] == "notification.delivered"]

    mails = smtp.mails
    assert len(mails) == total
    assert_one_mail_per_event_and_address(mails)
    assert {(m.header("X-ABSCH-Event-ID"), m.recipient) for m in mails} == {
        (r.event_id, r.recipient) for r in backlog
    }
    assert all(r.attempts == 1 and r.claimed_until is None for r in rows)
    assert set(sent_by) <= {w.worker_id for w in workers}
    assert sum(v or 0 for v in per_app) == total
    # PostgreSQL claims pass each other's locked rows by: both instances get some. SQLite has
    # one writer and both instances share this test's event loop, so it may let one of them
    # take everything; there exactly-once is what counts.
    if db_backend == "postgres":
        assert all(v and v > 0 for v in per_app), per_app
        assert len(sent_by) == 2, sent_by
    assert Counter((e["data"]["event_id"], e["data"]["recipient"]) for e in events) == Counter(
        (r.event_id, r.recipient) for r in backlog
    )


async def test_an_expired_claim_of_a_dead_worker_is_taken_over(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, smtp: SmtpSink
) -> None:
    settings = notifier_settings(
        kafka=kafka_bootstrap, prefix=topic_prefix, db=await db_url("notifier"), smtp=smtp
    )
    clock = FakeClock(datetime.now(UTC))
    async with running_notifier(settings, clock=clock) as notifier:
        ctx, worker = notifier.ctx, worker_of(notifier.app)
        now = clock()
        claim = timedelta(seconds=settings.claim_seconds)
        expired, live, free = await add_deliveries(
            ctx,
            [
                # Claimed by instances that were killed mid-batch: one claim has run out...
                pending_delivery(
                    "evt-dead",
                    "expired@claims.example",
                    now,
                    claimed_by="dead-1",
                    claimed_until=now - timedelta(seconds=1),
                ),
                # ...the other one still runs for a while.
                pending_delivery(
                    "evt-dead",
                    "live@claims.example",
                    now,
                    claimed_by="dead-2",
                    claimed_until=now + claim / 2,
                ),
                pending_delivery("evt-dead", "free@claims.example", now),
            ],
        )
        worker.wake()
        await eventually(
            lambda: (
                {m.recipient for m in smtp.mails}
                == {"expired@claims.example", "free@claims.example"}
            ),
            what="the expired and the unclaimed delivery sent",
        )
        # The round that claimed those two (one statement, at one instant of a clock that
        # stands still) passed the live claim by, and no later round can take it either.
        await eventually(
            lambda: _status(ctx, expired, "sent"), what="the taken-over delivery recorded"
        )
        held = await delivery(ctx, live)
        assert (held.status, held.attempts, held.claimed_by) == ("pending", 0, "dead-2")

        clock.advance(seconds=claim.total_seconds())
        worker.wake()
        await eventually(lambda: _status(ctx, live, "sent"), what="the second claim taken over")
        rows = [await delivery(ctx, i) for i in (expired, live, free)]

    assert sorted(m.recipient for m in smtp.mails) == [
        "expired@claims.example",
        "free@claims.example",
        "live@claims.example",
    ]
    assert all(r.claimed_by == worker.worker_id and r.attempts == 1 for r in rows)
    assert worker.worker_id.startswith(f"{settings.instance_id}-")


async def _status(ctx: NotifierContext, row_id: int, status: str) -> bool:
    return (await delivery(ctx, row_id)).status == status


async def test_concurrent_claims_take_at_most_a_batch_each_and_never_overlap(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, smtp: SmtpSink
) -> None:
    db = await db_url("notifier")

    def settings(instance: str) -> Any:
        return notifier_settings(
            kafka=kafka_bootstrap, prefix=topic_prefix, db=db, smtp=smtp, instance_id=instance
        )

    batch = 7
    async with running_notifier(settings("a")) as a, running_notifier(settings("b")) as b:
        for app in (a.app, b.app):  # only the workers below send
            await worker_of(app).stop()
        now = datetime.now(UTC)
        await add_deliveries(
            a.ctx, [pending_delivery("evt-batch", f"p{n}@claims.example", now) for n in range(20)]
        )
        workers = [
            DeliveryWorker(n.ctx, instance_id=f"x{i}", batch=batch) for i, n in enumerate((a, b))
        ]
        first = await asyncio.gather(*(w.run_once() for w in workers))
        second = await asyncio.gather(*(w.run_once() for w in workers))
        third = await asyncio.gather(*(w.run_once() for w in workers))

    assert first == [batch, batch]
    assert sum(second) == 20 - 2 * batch
    assert third == [0, 0]
    assert len(smtp.mails) == 20
    assert_one_mail_per_event_and_address(smtp.mails)

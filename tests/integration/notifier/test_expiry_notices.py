"""IRCC expiry notices [P9]: the issuing CNA is told once, 60 days before ``dateOfExpiry``,
never for a revoked IRCC; "today" comes from the clock given to ``bootstrap``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from services.notifier.adapters.tables import IrccRow
from services.notifier.expiry import sweep_expiry
from shared.events import CloudEvent, Topic
from tests.support.communiques import identifier
from tests.support.mail import envelope_recipients, mails_about
from tests.support.notifier import (
    EventWriter,
    FakeClock,
    RunningNotifier,
    directory_event,
    ircc_event,
    notifier_settings,
    running_notifier,
)
from tests.support.poll import eventually
from tests.support.records import authority, focal_point, permit
from tools.smtp_sink import SmtpSink

EXPIRY = "2026-06-30"  # the notice is due from 2026-05-01


async def _stored(notifier: RunningNotifier, count: int) -> bool:
    async with notifier.ctx.sessions() as session:
        rows = list(await session.scalars(select(IrccRow)))
    return len(rows) == count and sum(r.revoked for r in rows) == 1


async def _notice_sent(notifier: RunningNotifier, ident: str) -> bool:
    async with notifier.ctx.sessions() as session:
        row = await session.get(IrccRow, ident)
    return row is not None and row.expiry_notice_sent


def _irccs(cna: str, late_cna: str) -> tuple[dict[str, CloudEvent[Any]], CloudEvent[Any]]:
    """Publications of four IRCCs (one undated, one whose CNA comes later), one revocation."""
    revoked = permit("mx", cna, dateOfExpiry=EXPIRY)
    records = {
        "expiring": permit("mx", cna, dateOfExpiry=EXPIRY),
        "revoked": revoked,
        "undated": permit("mx", cna),
        "orphan": permit("mx", late_cna, dateOfExpiry="2026-05-10"),
    }
    published = {name: ircc_event(record) for name, record in records.items()}
    revocation = ircc_event(
        revoked | {"amendmentIntent": 1, "amendmentDescription": {"en": "withdrawn"}},
        event_type="ircc.revoked",
        document_id=published["revoked"].data.document_id,
        revision=2,
    )
    return published, revocation


async def test_the_issuing_cna_hears_once_sixty_days_before_expiry(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, smtp: SmtpSink
) -> None:
    clock = FakeClock.on("2026-04-01")
    settings = notifier_settings(
        kafka=kafka_bootstrap,
        prefix=topic_prefix,
        db=await db_url("notifier"),
        smtp=smtp,
        expiry_check_interval_seconds=0.1,
        reference_wait_seconds=0.2,
    )
    cna, late_cna = authority("mx", ["cna@mx.example"]), authority("mx", ["late@mx.example"])
    published, revocation = _irccs(identifier(cna), identifier(late_cna))
    async with EventWriter(kafka_bootstrap, topic_prefix) as writer:
        for record in (cna, focal_point("mx", ["nfp@mx.example"])):
            await writer.send(Topic.DIRECTORY, directory_event(record))
        async with running_notifier(settings, clock=clock) as notifier:
            await eventually(lambda: notifier.ctx.projection.knows(identifier(cna)))
            for event in (*published.values(), revocation):
                await writer.send(Topic.IRCC, event)
            await eventually(lambda: _stored(notifier, 4), what="IRCCs in the projection")

            clock.set_date("2026-04-30")
            assert await sweep_expiry(notifier.ctx) == 0
            clock.set_date("2026-05-01")  # the periodic sweep picks it up
            await eventually(lambda: mails_about(smtp, template="ircc_expiry"), what="a notice")
            notices = mails_about(smtp, template="ircc_expiry")
            assert envelope_recipients(notices) == {"cna@mx.example"}
            assert notices[0].header("X-ABSCH-Subject") == published["expiring"].subject
            assert EXPIRY in notices[0].body()
            assert await _notice_sent(notifier, published["expiring"].data.identifier)

            # The orphan's CNA was unknown: no notice yet, and none lost.
            assert not await _notice_sent(notifier, published["orphan"].data.identifier)
            await writer.send(Topic.DIRECTORY, directory_event(late_cna))
            orphan_uid = published["orphan"].subject
            await eventually(lambda: mails_about(smtp, template="ircc_expiry", subject=orphan_uid))

            for day in ("2026-05-02", "2026-06-30", "2026-07-01"):
                clock.set_date(day)
                assert await sweep_expiry(notifier.ctx) == 0
    notices = mails_about(smtp, template="ircc_expiry")
    assert sorted(m.recipient for m in notices) == ["cna@mx.example", "late@mx.example"]

"""A notifier restarted on the same database under a new consumer group re-reads every
topic from the start, and still mails each (event, address) at most once."""

from __future__ import annotations

from typing import Any

from shared.events import Topic, topic_name
from tests.support.communiques import identifier
from tests.support.mail import assert_one_mail_per_event_and_address, consumed, mails_about, metric
from tests.support.metrics import scrape
from tests.support.notifier import (
    EventWriter,
    directory_event,
    ircc_event,
    notifier_settings,
    running_notifier,
)
from tests.support.poll import eventually
from tests.support.records import authority, focal_point, permit
from tools.smtp_sink import SmtpSink


async def test_a_reread_from_the_start_sends_nothing_twice(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, smtp: SmtpSink
) -> None:
    db = await db_url("notifier")

    def settings(group: str) -> Any:
        return notifier_settings(
            kafka=kafka_bootstrap, prefix=topic_prefix, db=db, smtp=smtp, consumer_group=group
        )

    cna, nfp = authority("mx", ["cna@mx.example"]), focal_point("mx", ["nfp@mx.example"])
    events = [ircc_event(permit("mx", identifier(cna))) for _ in range(3)]
    ircc_topic = topic_name(Topic.IRCC, topic_prefix)
    async with EventWriter(kafka_bootstrap, topic_prefix) as writer:
        for record in (cna, nfp):
            await writer.send(Topic.DIRECTORY, directory_event(record))
        async with running_notifier(settings("mail-a")) as first:
            projection = first.ctx.projection
            await eventually(
                lambda: projection.knows(identifier(cna)) and projection.knows(identifier(nfp))
            )
            for event in events:
                await writer.send(Topic.IRCC, event)
            await eventually(lambda: len(smtp.mails) == 6, what="six mails")
        before = smtp.mails

        async with running_notifier(settings("mail-b")) as second:
            # Both of its consumers (mail and view) are in new groups: each reads all three.
            await eventually(
                lambda: _at_least(second.client, ircc_topic, 2 * len(events)),
                what="the IRCC topic re-read by both consumers",
            )
            late = ircc_event(permit("mx", identifier(cna)))
            await writer.send(Topic.IRCC, late)
            await eventually(lambda: len(mails_about(smtp, subject=late.subject)) == 2)
            text = await scrape(second.client)
            assert metric(text, "notifier_mails_queued_total", template="ircc_published") == 2

    assert smtp.mails[: len(before)] == before
    assert len(smtp.mails) == len(before) + 2
    assert_one_mail_per_event_and_address(smtp.mails)


async def _at_least(client: Any, topic: str, count: int) -> bool:
    return await consumed(client, "notifier", topic) >= count

"""Events can overtake the directory records they name (other topics, other consumers):
the notifier waits, boundedly, for every record a recipient comes from."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from shared.events import Topic, new_event
from shared.events.models import CpcPublished
from tests.support.communiques import communique, identifier
from tests.support.mail import envelope_recipients, mails_about
from tests.support.metrics import scrape
from tests.support.notifier import (
    EventWriter,
    directory_event,
    ircc_event,
    notifier_settings,
    running_notifier,
)
from tests.support.poll import eventually
from tests.support.records import authority, checkpoint, contact, focal_point, permit
from tools.smtp_sink import SmtpSink

log = logging.getLogger(__name__)


def _cpc_event(record: dict[str, Any], document_id: int) -> Any:
    uid = f"ABSCH-CPC-DE-{document_id}-1"
    data = CpcPublished(
        uid=uid,
        identifier=identifier(record),
        document_id=document_id,
        revision=1,
        government="de",
        checkpoints=[r["identifier"] for r in record["absCheckpoints"]],
        record=record,
    )
    return new_event("cpc.published", source="checkpoint", subject=uid, data=data)


def _mailed(smtp: SmtpSink, event_id: str, want: set[str]) -> Callable[[], bool]:
    return lambda: envelope_recipients(mails_about(smtp, event_id=event_id)) == want


async def test_recipients_named_by_late_records_still_get_their_copy(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, smtp: SmtpSink
) -> None:
    settings = notifier_settings(
        kafka=kafka_bootstrap, prefix=topic_prefix, db=await db_url("notifier"), smtp=smtp
    )
    cna, nfp = authority("mx", ["cna@mx.example"]), focal_point("mx", ["nfp@mx.example"])
    holder, watcher = contact(["holder@lab.example"]), contact(["watcher@de.example"])
    cp = checkpoint("de", contacts=[identifier(watcher)])
    ircc = ircc_event(permit("mx", identifier(cna), pic_holders=[identifier(holder)]))
    cpc = _cpc_event(communique("de", [identifier(cp)], irccs=[identifier(ircc.data.record)]), 7)
    async with (
        EventWriter(kafka_bootstrap, topic_prefix) as writer,
        running_notifier(settings) as notifier,
    ):
        for record in (cna, nfp):
            await writer.send(Topic.DIRECTORY, directory_event(record))
        # Country-wide recipients (the NFP) are no reference anyone could wait for.
        projection = notifier.ctx.projection
        await eventually(lambda: projection.knows(identifier(nfp)))
        sentinel = ircc_event(permit("mx", identifier(cna)))
        await writer.send(Topic.IRCC, sentinel)
        await eventually(lambda: len(mails_about(smtp, event_id=sentinel.id)) == 2)
        # Both consumers are live. Each mail event goes first, then, one link at a time,
        # the records its recipients come from, each after the previous link is known.
        await writer.send(Topic.IRCC, ircc)
        await eventually(lambda: projection.ircc(ircc.data.identifier) is not None)
        await writer.send(Topic.DIRECTORY, directory_event(holder))
        await writer.send(Topic.CPC, cpc)
        await writer.send(Topic.DIRECTORY, directory_event(cp))
        await eventually(lambda: projection.knows(identifier(cp)))
        await writer.send(Topic.DIRECTORY, directory_event(watcher))

        mx_side = {"cna@mx.example", "nfp@mx.example", "holder@lab.example"}
        for event, want in ((ircc, mx_side), (cpc, mx_side | {"watcher@de.example"})):
            await eventually(_mailed(smtp, event.id, want), what=f"mails of {event.type}")
        text = await scrape(notifier.client)
        assert "notifier_unresolved_references_total{" not in text


async def test_events_naming_unknown_records_park_and_never_block_others(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, smtp: SmtpSink
) -> None:
    """Three CPCs citing IRCCs nobody published park; an unrelated IRCC on the same
    partitions is mailed within 2 s; the parked ones go out, to whoever is known, after
    ``reference_wait_seconds``."""
    settings = notifier_settings(
        kafka=kafka_bootstrap,
        prefix=topic_prefix,
        db=await db_url("notifier"),
        smtp=smtp,
        reference_wait_seconds=6.0,
        # One partition per topic: every event queues behind the parked ones.
        kafka_partitions=1,
    )
    cna, nfp = authority("mx", ["cna@mx.example"]), focal_point("mx", ["nfp@mx.example"])
    watcher = contact(["watcher@de.example"])
    cp = checkpoint("de", contacts=[identifier(watcher)])
    unknown = [permit("mx", identifier(cna)) for _ in range(3)]
    cpcs = [
        _cpc_event(communique("de", [identifier(cp)], irccs=[identifier(u)]), 100 + n)
        for n, u in enumerate(unknown)
    ]
    async with (
        EventWriter(kafka_bootstrap, topic_prefix) as writer,
        running_notifier(settings) as notifier,
    ):
        for record in (cna, nfp, watcher, cp):
            await writer.send(Topic.DIRECTORY, directory_event(record))
        projection = notifier.ctx.projection
        await eventually(lambda: projection.knows(identifier(cp)), what="the view is filled")
        for event in cpcs:
            await writer.send(Topic.CPC, event)

        async def parked() -> bool:
            text = await scrape(notifier.client)
            return "notifier_parked_events 3.0" in text

        await eventually(parked, what="three CPCs parked")
        unrelated = ircc_event(permit("mx", identifier(cna)))
        sent_at = asyncio.get_running_loop().time()
        await writer.send(Topic.IRCC, unrelated)
        await eventually(
            _mailed(smtp, unrelated.id, {"cna@mx.example", "nfp@mx.example"}),
            timeout=2.0,
            interval=0.02,
            what="the unrelated IRCC's mails within 2 s",
        )
        took = asyncio.get_running_loop().time() - sent_at
        # The parked CPCs are mailed to the user side once the wait is over.
        for event in cpcs:
            await eventually(
                _mailed(smtp, event.id, {"watcher@de.example"}),
                timeout=30,
                what="a parked CPC mailed after the wait",
            )
        text = await scrape(notifier.client)
        assert "notifier_parked_events 0.0" in text
        assert 'notifier_unresolved_references_total{kind="cpc"} 3.0' in text
        log.info(f"unrelated IRCC mailed {took:.2f}s after it was sent, behind 3 parked CPCs")

"""The notifier's mail consumer and delivery worker through the kit's harness, with the
in-memory mailer standing in for SMTP (no broker, no SMTP server)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.adapters.smtp import PermanentFailure, SmtpMailer, TemporaryFailure
from services.notifier.adapters.tables import (
    Base,
    DeliveryRow,
    IrccRow,
    OutboxRow,
    ParkedEvent,
    ProcessedEvent,
)
from services.notifier.context import NotifierContext, utc_now
from services.notifier.delivery import DeliveryWorker
from services.notifier.domain import expiry_notice_due
from services.notifier.expiry import sweep_expiry
from services.notifier.handlers import SPECS, mail_handler, settle
from services.notifier.metrics import NotifierMetrics
from services.notifier.parking import ParkingWorker
from services.notifier.projection import Projection
from services.notifier.settings import NotifierSettings
from shared.events import CloudEvent, new_event
from shared.events.models import CpcAmended, CpcPublished
from shared.kafka.producer import EventProducer
from shared.kit.consumer import Delivery, Tx
from shared.kit.directory import DIRECTORY_TYPES, DirectoryView, directory_table
from shared.kit.outbox import OutboxRelay
from shared.kit.testing import MEMORY_URL, FakeMailer, HandlerHarness
from shared.uid import format_uid
from tests.support.communiques import communique, identifier
from tests.support.notifier import directory_event, ircc_event
from tests.support.records import authority, checkpoint, contact, focal_point, permit

CONTACT, CNA, NFP = "lab@de.example", "cna@mx.example", "nfp@mx.example"


def cpc_published(record: dict[str, Any], document_id: int) -> CloudEvent[Any]:
    """``cpc.published`` as the checkpoint service builds it."""
    gov = record["government"]["identifier"]
    data = CpcPublished(
        uid=format_uid("absCheckpointCommunique", gov, document_id, 1),
        identifier=identifier(record),
        document_id=document_id,
        revision=1,
        government=gov,
        checkpoints=[c["identifier"] for c in record["absCheckpoints"]],
        record=record,
    )
    return new_event("cpc.published", source="checkpoint", subject=data.uid, data=data)


def key_of(event: CloudEvent[Any]) -> str:
    """The record key the services give an event: its subject UID without the revision."""
    return event.subject.rsplit("-", 1)[0]


@dataclass
class Notifier:
    """A notifier wired as ``services/notifier/bootstrap.py`` wires it, on the harness's
    database and the fake mailer; hooks count instead of waking workers."""

    harness: HandlerHarness
    ctx: NotifierContext
    mailer: FakeMailer
    registry: CollectorRegistry
    view: DirectoryView
    hooks: list[str] = field(default_factory=list)
    directory: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def learn(self, *events: CloudEvent[Any]) -> None:
        """Fold directory events into the kit's directory view and IRCC events into the
        projection, as their consumers do."""
        for event in events:
            if event.type in DIRECTORY_TYPES:
                await self.learn_in(event)
            else:
                await self.ctx.projection.apply(event)

    async def learn_in(self, *events: CloudEvent[Any]) -> None:
        """Fold events into the views within one transaction, as one consumed batch."""
        async with self.ctx.sessions() as session:
            async with session.begin():
                tx = Tx(session)
                for event in events:
                    if event.type in DIRECTORY_TYPES:
                        where = Delivery("t.absch.directory.v1", 0, 0, None)
                        await self.view.on_event(tx, event, where)
                    else:
                        await self.ctx.projection.apply_in(session, event)
            for hook in tx.hooks:
                hook()

    async def deliveries(self) -> dict[str, tuple[str, str, str]]:
        """address -> (event id, status, template)."""
        return {
            r.recipient: (r.event_id, r.status, r.template)
            for r in await self.harness.rows(DeliveryRow)
        }

    async def parked(self) -> list[tuple[str, str, list[str]]]:
        """(event id, key, missing references), oldest first."""
        return [
            (p.event_id, p.key, json.loads(p.missing)) for p in await self.harness.rows(ParkedEvent)
        ]


@pytest.fixture
async def notifier() -> AsyncIterator[Notifier]:
    registry = CollectorRegistry()
    metrics = NotifierMetrics(registry)
    settings = NotifierSettings(
        database_url=MEMORY_URL,
        kafka_topic_prefix="t.",
        public_base_url="http://absch.test",
        environment="test",
    )
    mailer = FakeMailer()
    view = DirectoryView(directory_table(Base.metadata))
    async with HandlerHarness(Base.metadata, topic="t.absch.cpc.v1") as harness:
        producer = EventProducer("127.0.0.1:9", client_id="test", metrics=metrics.plumbing)
        ctx = NotifierContext(
            settings=settings,
            sessions=harness.sessions,
            projection=Projection(harness.sessions),
            relay=OutboxRelay(harness.sessions, OutboxRow, producer, metrics.plumbing),
            mailer=cast(SmtpMailer, mailer),  # NotifierContext names the concrete class
            metrics=metrics,
            clock=utc_now,
        )
        view.mirrors.append(ctx.projection.mirror)
        world = Notifier(harness, ctx, mailer, registry, view)
        handle = mail_handler(
            ctx,
            on_parked=lambda: world.hooks.append("parked"),
            on_queued=lambda: world.hooks.append("queued"),
        )
        harness.use(dict.fromkeys(SPECS, handle))
        await ctx.projection.load()
        yield world


@dataclass
class World:
    """Germany's checkpoint (with a lab contact to inform) and Mexico's CNA and NFP."""

    events: list[CloudEvent[Any]]
    checkpoint: str
    cna: str
    ircc: dict[str, Any]


def world() -> World:
    lab = contact([CONTACT], gov="de")
    cp = checkpoint("de", contacts=[identifier(lab)])
    cna, nfp = authority("mx", [CNA]), focal_point("mx", [NFP])
    events = [directory_event(r) for r in (lab, cp, cna, nfp)]
    return World(events, identifier(cp), identifier(cna), permit("mx", identifier(cna)))


async def test_a_cpc_queues_one_delivery_per_recipient_once(notifier: Notifier) -> None:
    w = world()
    ircc = ircc_event(w.ircc)
    await notifier.learn(*w.events, ircc)
    cpc = cpc_published(communique("de", [w.checkpoint], irccs=[identifier(w.ircc)]), 1001)

    await notifier.harness.feed(cpc, key=key_of(cpc))
    assert await notifier.deliveries() == {
        CONTACT: (cpc.id, "pending", "cpc_published"),
        CNA: (cpc.id, "pending", "cpc_published"),
        NFP: (cpc.id, "pending", "cpc_published"),
    }
    (processed,) = await notifier.harness.rows(ProcessedEvent)
    assert (processed.event_id, processed.deliveries) == (cpc.id, 3)
    assert notifier.hooks == ["queued"]

    await notifier.harness.feed(cpc, key=key_of(cpc))  # a second copy of the event
    assert len(await notifier.deliveries()) == 3
    assert len(await notifier.harness.rows(ProcessedEvent)) == 1
    assert await notifier.parked() == []


async def test_an_ircc_event_queues_its_mails_and_joins_the_view(notifier: Notifier) -> None:
    w = world()
    await notifier.learn_in(*w.events)
    ircc = ircc_event(w.ircc)
    await notifier.harness.feed(ircc, key=key_of(ircc), topic="t.absch.ircc.v1")
    assert await notifier.deliveries() == {
        CNA: (ircc.id, "pending", "ircc_published"),
        NFP: (ircc.id, "pending", "ircc_published"),
    }
    (row,) = await notifier.harness.rows(IrccRow)
    assert (row.identifier, row.uid) == (identifier(w.ircc), ircc.data.uid)
    assert notifier.ctx.projection.ircc(identifier(w.ircc)) == w.ircc


async def test_an_unknown_ircc_parks_the_event_and_its_key(notifier: Notifier) -> None:
    w = world()
    await notifier.learn(*w.events)
    cited = identifier(w.ircc)
    waiting = cpc_published(communique("de", [w.checkpoint], irccs=[cited]), 1002)
    key = key_of(waiting)

    await notifier.harness.feed(waiting, key=key)
    assert await notifier.parked() == [(waiting.id, key, [cited])]
    assert await notifier.deliveries() == {}
    assert await notifier.harness.rows(ProcessedEvent) == []
    assert notifier.hooks == ["parked"]

    # Resolvable on their own: the one with the parked key waits behind, the other goes.
    behind = cpc_published(communique("de", [w.checkpoint], source_countries=["mx"]), 1002)
    other = cpc_published(communique("de", [w.checkpoint], source_countries=["mx"]), 1003)
    await notifier.harness.feed(behind, key=key)
    await notifier.harness.feed(other, key=key_of(other))
    assert await notifier.parked() == [(waiting.id, key, [cited]), (behind.id, key, [])]
    assert {address: d[0] for address, d in (await notifier.deliveries()).items()} == {
        CONTACT: other.id,
        CNA: other.id,
        NFP: other.id,
    }
    assert notifier.hooks == ["parked", "parked", "queued"]

    # Once the IRCC is known, the parking worker settles the key's events in order.
    await notifier.learn(ircc_event(w.ircc))
    settled = await parking_worker(notifier).run_once()
    assert settled == 2
    assert await notifier.parked() == []
    rows = await notifier.harness.rows(DeliveryRow)
    assert [r.event_id for r in rows] == [other.id] * 3 + [waiting.id] * 3 + [behind.id] * 3


def parking_worker(notifier: Notifier) -> ParkingWorker:
    """The parking worker as bootstrap wires it, its view always just advanced."""
    ctx = notifier.ctx

    async def settle_parked(session: AsyncSession, event: CloudEvent[Any], force: bool) -> bool:
        return await settle(ctx, session, event, force)

    return ParkingWorker(
        ctx.sessions,
        settle_parked,
        ctx.metrics,
        wait_seconds=3600.0,
        view_advanced_at=time.time,
        on_settled=lambda: notifier.hooks.append("settled"),
    )


async def test_a_view_behind_the_directory_parks(notifier: Notifier) -> None:
    w = world()
    await notifier.learn(*w.events)
    notifier.ctx.view_current = lambda: False
    cpc = cpc_published(communique("de", [w.checkpoint], source_countries=["mx"]), 1004)
    await notifier.harness.feed(cpc, key=key_of(cpc))
    assert await notifier.parked() == [(cpc.id, key_of(cpc), [])]
    assert await notifier.deliveries() == {}


async def test_a_second_copy_of_a_parked_event_adds_nothing(notifier: Notifier) -> None:
    w = world()
    await notifier.learn(*w.events)
    cpc = cpc_published(communique("de", [w.checkpoint], irccs=[identifier(w.ircc)]), 1005)
    await notifier.harness.feed(cpc, key=key_of(cpc))
    await notifier.harness.feed(cpc, key=key_of(cpc))
    assert [p[0] for p in await notifier.parked()] == [cpc.id]


# -- an amended CPC goes to everyone the first copy went to --------------------------------

CNA_BR = "cna@br.example"


def cpc_amended(
    previous: CloudEvent[Any], record: dict[str, Any], changed: list[str]
) -> CloudEvent[Any]:
    """``cpc.amended`` of the revision after ``previous``, as the checkpoint service builds it."""
    before: CpcPublished = previous.data
    revision = before.revision + 1
    uid = format_uid("absCheckpointCommunique", before.government, before.document_id, revision)
    data = CpcAmended(
        uid=uid,
        identifier=before.identifier,
        document_id=before.document_id,
        revision=revision,
        government=before.government,
        checkpoints=[c["identifier"] for c in record["absCheckpoints"]],
        record=record,
        reason={"en": "The wrong certificate was cited"},
        previous_uid=before.uid,
        changed=changed,
    )
    return new_event("cpc.amended", source="checkpoint", subject=uid, data=data)


async def test_an_amended_cpc_reaches_the_first_copys_recipients_and_the_new_ones(
    notifier: Notifier,
) -> None:
    w = world()
    cna_br = authority("br", [CNA_BR])
    brazilian = permit("br", identifier(cna_br))
    await notifier.learn(
        *w.events, directory_event(cna_br), ircc_event(w.ircc), ircc_event(brazilian)
    )
    first = cpc_published(communique("de", [w.checkpoint], irccs=[identifier(w.ircc)]), 1007)
    await notifier.harness.feed(first, key=key_of(first))
    # The amendment cites Brazil's certificate instead of Mexico's.
    record = first.data.record | {"absIRCCs": [{"identifier": identifier(brazilian)}]}
    amended = cpc_amended(first, record, ["absIRCCs"])
    await notifier.harness.feed(amended, key=key_of(amended))

    rows = [r for r in await notifier.harness.rows(DeliveryRow) if r.event_id == amended.id]
    assert {r.recipient: (r.template, r.role, r.government) for r in rows} == {
        CONTACT: ("cpc_amended", "checkpoint-contact", "de"),
        CNA_BR: ("cpc_amended", "ircc-cna", "br"),
        # Mexico's side got the first copy: it learns that the communiqué changed.
        CNA: ("cpc_amended", "ircc-cna", "mx"),
        NFP: ("cpc_amended", "provider-nfp", "mx"),
    }
    mail = next(r for r in rows if r.recipient == CNA)
    assert mail.subject == amended.data.uid
    for said in ("The wrong certificate was cited", "absIRCCs", first.data.uid):
        assert said in mail.text_body
        assert said in mail.html_body
    # A second copy of the amendment adds nothing; the first copy's deliveries stay.
    await notifier.harness.feed(amended, key=key_of(amended))
    rows = await notifier.harness.rows(DeliveryRow)
    counts = Counter((r.event_id, r.template) for r in rows)
    assert counts == {(first.id, "cpc_published"): 3, (amended.id, "cpc_amended"): 4}


# -- the delivery worker sends through the fake mailer -------------------------------------


async def queued_cpc(notifier: Notifier) -> CloudEvent[Any]:
    w = world()
    await notifier.learn(*w.events, ircc_event(w.ircc))
    cpc = cpc_published(communique("de", [w.checkpoint], irccs=[identifier(w.ircc)]), 1006)
    await notifier.harness.feed(cpc, key=key_of(cpc))
    return cpc


def outcomes(staged: list[CloudEvent[Any]]) -> dict[tuple[str, str], str]:
    """(type, recipient) -> id of the event mailed about, of the notification events staged."""
    return {(e.type, e.data.recipient): e.data.event_id for e in staged}


async def test_the_delivery_worker_sends_and_records_delivered(notifier: Notifier) -> None:
    cpc = await queued_cpc(notifier)
    worker = DeliveryWorker(notifier.ctx)
    assert await worker.run_once() == 3
    assert sorted(notifier.mailer.recipients) == sorted([CONTACT, CNA, NFP])
    message = notifier.mailer.sent[0]
    assert message["X-ABSCH-Event-ID"] == cpc.id
    assert message["X-ABSCH-Template"] == "cpc_published"
    rows = await notifier.harness.rows(DeliveryRow)
    assert {(r.status, r.attempts, r.sent_at is not None) for r in rows} == {("sent", 1, True)}
    assert outcomes(await notifier.harness.staged(OutboxRow)) == {
        ("notification.delivered", CONTACT): cpc.id,
        ("notification.delivered", CNA): cpc.id,
        ("notification.delivered", NFP): cpc.id,
    }
    assert await worker.run_once() == 0  # nothing sent twice
    assert len(notifier.mailer.sent) == 3


class CountingMailer(FakeMailer):
    """Keeps how many sends were in flight at once, and the wave each send belonged to."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most = 0

    async def send_bytes(self, sender: str, recipient: str, data: bytes) -> None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            for _ in range(3):  # let the other sends of the wave start
                await asyncio.sleep(0)
            await super().send_bytes(sender, recipient, data)
        finally:
            self.in_flight -= 1


async def test_a_batch_goes_out_in_waves_one_mail_per_connection(notifier: Notifier) -> None:
    cpc = await queued_cpc(notifier)
    mailer = CountingMailer()
    settings = notifier.ctx.settings.model_copy(update={"smtp_connections": 2})
    ctx = replace(notifier.ctx, settings=settings, mailer=cast(SmtpMailer, mailer))
    assert await DeliveryWorker(ctx).run_once() == 3
    assert mailer.most == 2  # two connections busy at once, never three
    sent = {m["To"]: m for m in mailer.sent}
    assert sorted(sent) == sorted([CONTACT, CNA, NFP])
    # One event, one language: the same flattened body for every recipient, each with its
    # own To and a Message-ID of its own.
    assert len({m["Message-ID"] for m in mailer.sent}) == 3
    assert all(m["X-ABSCH-Event-ID"] == cpc.id for m in mailer.sent)
    assert {m.get_content_type() for m in mailer.sent} == {"multipart/alternative"}
    # A flattened body is reused: copies built once share their random MIME boundary.
    assert len({m.get_boundary() for m in mailer.sent}) < 3
    rows = await notifier.harness.rows(DeliveryRow)
    assert {(r.status, r.attempts) for r in rows} == {("sent", 1)}


async def test_behind_a_backlog_the_gauges_are_counted_at_most_once_a_second(
    notifier: Notifier,
) -> None:
    await queued_cpc(notifier)
    start = utc_now()
    now = [start]
    ctx = replace(notifier.ctx, clock=lambda: now[0])
    worker = DeliveryWorker(ctx, batch=1)

    def pending() -> float | None:
        return notifier.registry.get_sample_value("notifier_deliveries_pending")

    assert await worker.run_once() == 1
    assert pending() == 2
    assert await worker.run_once() == 1  # a full batch within the second: not counted again
    assert pending() == 2
    now[0] = start + timedelta(seconds=1)
    assert await worker.run_once() == 1  # a second on: counted, though the batch was full
    assert pending() == 0
    assert await worker.run_once() == 0  # less than a batch: always counted
    assert pending() == 0


async def test_a_5xx_fails_the_delivery_at_once(notifier: Notifier) -> None:
    cpc = await queued_cpc(notifier)
    notifier.mailer.fail(CNA, PermanentFailure("550 5.1.1 no such mailbox"))
    assert await DeliveryWorker(notifier.ctx).run_once() == 3
    statuses = {
        r.recipient: (r.status, r.last_error) for r in await notifier.harness.rows(DeliveryRow)
    }
    assert statuses == {
        CONTACT: ("sent", None),
        CNA: ("failed", "550 5.1.1 no such mailbox"),
        NFP: ("sent", None),
    }
    staged = await notifier.harness.staged(OutboxRow)
    assert outcomes(staged) == {
        ("notification.delivered", CONTACT): cpc.id,
        ("notification.failed", CNA): cpc.id,
        ("notification.delivered", NFP): cpc.id,
    }
    failed = next(e for e in staged if e.type == "notification.failed")
    assert failed.data.error == "550 5.1.1 no such mailbox"
    assert any(e.id == f"dlq-{failed.id}" for e in staged)  # the DLQ keeps it too
    assert sorted(notifier.mailer.recipients) == sorted([CONTACT, NFP])


async def test_a_4xx_keeps_the_delivery_for_a_later_retry(notifier: Notifier) -> None:
    await queued_cpc(notifier)
    notifier.mailer.fail(NFP, TemporaryFailure("451 4.7.1 greylisted, try later"))
    before = utc_now()
    assert await DeliveryWorker(notifier.ctx).run_once() == 3
    (row,) = [r for r in await notifier.harness.rows(DeliveryRow) if r.recipient == NFP]
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error == "451 4.7.1 greylisted, try later"
    assert aware(row.next_attempt_at) > before
    assert row.deferred_since is not None
    staged = await notifier.harness.staged(OutboxRow)
    assert ("notification.delivered", NFP) not in outcomes(staged)
    assert len(staged) == 2


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=utc_now().tzinfo)


async def test_one_impossible_expiry_date_does_not_stop_the_expiry_sweep(
    notifier: Notifier,
) -> None:
    w = world()
    await notifier.learn(*w.events)
    odd = permit("mx", w.cna) | {"dateOfIssuance": "0001-01-01", "dateOfExpiry": "0001-01-10"}
    due = permit("mx", w.cna) | {"dateOfIssuance": "2025-01-01", "dateOfExpiry": "2030-03-01"}
    # Kept by an older version that checked less: a date that is no date at all.
    broken = permit("mx", w.cna) | {"dateOfExpiry": "2030-02-30"}
    await notifier.learn(ircc_event(odd), ircc_event(broken), ircc_event(due))
    notifier.ctx.clock = lambda: datetime(2030, 2, 1, 12, tzinfo=UTC)

    assert await sweep_expiry(notifier.ctx) == 1
    assert await sweep_expiry(notifier.ctx) == 0  # the good one is notified exactly once
    templates = {
        address: template for address, (_, _, template) in (await notifier.deliveries()).items()
    }
    assert templates == {CNA: "ircc_expiry"}
    # The notice window of such a date starts at the first day there is.
    assert expiry_notice_due(odd, today=date(1, 1, 5), revoked=False, already_sent=False)

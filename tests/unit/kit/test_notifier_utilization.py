"""Utilization alerts through the notifier's mail consumer and delivery worker, on the kit's
harness with the in-memory mailer: who gets them, once per event id, and what happens when
the provider country's authorities are not known."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client import generate_latest
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.adapters.tables import DeliveryRow, ProcessedEvent
from services.notifier.delivery import DeliveryWorker
from services.notifier.handlers import settle
from services.notifier.parking import ParkingWorker
from shared.events import CloudEvent, new_event
from shared.events.models import IrccUtilization, UtilizationFirstUse, UtilizationReport
from tests.support.communiques import identifier
from tests.support.mail import metric
from tests.support.notifier import directory_event
from tests.support.records import authority, checkpoint, contact, focal_point
from tests.unit.kit.test_notifier import Notifier, notifier

__all__ = ["notifier"]  # the fixture, shared with the notifier's other harness tests

TOPIC = "t.absch.utilization.v1"
NFP, CNA, PERSON, CNA2 = "nfp@mx.example", "cna@mx.example", "person@mx.example", "cna2@mx.example"
# Parties that must never get a utilization alert: the user country, its checkpoint, a PIC
# holder.
USER_SIDE = ("nfp@de.example", "cna@de.example", "checkpoint@de.example", "holder@lab.example")


def directory() -> tuple[list[CloudEvent[Any]], str]:
    """Mexico's NFP, two CNAs (one with a contact person); Germany's side; a PIC holder."""
    person = contact([PERSON], gov="mx")
    cna = authority("mx", [CNA], contacts=[{"identifier": identifier(person)}])
    records = [
        focal_point("mx", [NFP]),
        person,
        cna,
        authority("mx", [CNA2], languages=["es"]),
        focal_point("de", [USER_SIDE[0]]),
        authority("de", [USER_SIDE[1]]),
        checkpoint("de") | {"emails": [USER_SIDE[2]]},
        contact([USER_SIDE[3]]),
    ]
    return [directory_event(r) for r in records], identifier(cna)


def first_use_event(cna: str | None, *, provider: str = "mx") -> CloudEvent[Any]:
    data = UtilizationFirstUse(
        provider_country=provider,
        user_country="de",
        ircc=f"IRCC-{provider.upper()}",
        ircc_uid=f"ABSCH-IRCC-{provider.upper()}-207443-1",
        cna=cna,
        cpc_uid="ABSCH-CPC-DE-1001-1",
        cited_at=datetime(2026, 11, 3, tzinfo=UTC),
    )
    event = new_event("utilization.first_use", source="monitor", subject=data.cpc_uid, data=data)
    return event.model_copy(update={"id": f"first-use-{provider}-de"})  # ids are derived


def report_event(provider: str = "mx") -> CloudEvent[Any]:
    data = UtilizationReport(
        provider_country=provider,
        month="2026-11",
        window_start=datetime(2026, 11, 1, tzinfo=UTC),
        window_end=datetime(2026, 12, 1, tzinfo=UTC),
        citations=2,
        users={"de": 2},
        irccs=[IrccUtilization(ircc="IRCC-MX", citations=2, users={"de": 2})],
        checkpoints={"CP-DE": 2},
        discrepancies={},
    )
    event = new_event(
        "utilization.report", source="monitor", subject=f"{provider}:2026-11", data=data
    )
    return event.model_copy(update={"id": f"report-{provider}-2026-11"})


async def test_first_use_mails_the_nfp_and_the_cna_once_whatever_the_copies(
    notifier: Notifier,
) -> None:
    events, cna = directory()
    await notifier.learn(*events)
    alert = first_use_event(cna)

    await notifier.harness.feed(alert, key="mx", topic=TOPIC)
    await notifier.harness.feed(alert, key="mx", topic=TOPIC)  # redelivered
    expected = {
        address: (alert.id, "pending", "utilization_first_use") for address in (NFP, CNA, PERSON)
    }
    assert await notifier.deliveries() == expected
    worker = DeliveryWorker(notifier.ctx)
    assert await worker.run_once() == 3
    # Re-sent by a restarted analytics worker after the mails went out: same id, no mail.
    await notifier.harness.feed(alert, key="mx", topic=TOPIC)
    assert await worker.run_once() == 0
    assert sorted(notifier.mailer.recipients) == sorted([NFP, CNA, PERSON])
    (processed,) = await notifier.harness.rows(ProcessedEvent)
    assert (processed.event_id, processed.deliveries) == (alert.id, 3)
    rows = await notifier.harness.rows(DeliveryRow)
    assert {(r.subject, r.government) for r in rows} == {("ABSCH-CPC-DE-1001-1", "mx")}


async def test_the_report_goes_to_the_nfp_and_every_cna_in_their_languages(
    notifier: Notifier,
) -> None:
    events, _cna = directory()
    await notifier.learn(*events)
    alert = report_event()

    await notifier.harness.feed(alert, key="mx", topic=TOPIC)
    await notifier.harness.feed(alert, key="mx", topic=TOPIC)
    rows = await notifier.harness.rows(DeliveryRow)
    assert {(r.recipient, r.language, r.role) for r in rows} == {
        (NFP, "en", "provider-nfp"),
        (CNA, "en", "provider-cna"),
        (PERSON, "en", "provider-cna"),
        (CNA2, "es", "provider-cna"),
    }
    assert {(r.subject, r.template, r.event_id) for r in rows} == {
        ("MX:2026-11", "utilization_report", alert.id)
    }
    spanish = next(r for r in rows if r.recipient == CNA2)
    assert spanish.mail_subject == "Informe mensual de utilización MX:2026-11 (México)"


async def test_an_unknown_cna_parks_then_mails_who_is_known_and_counts_it(
    notifier: Notifier,
) -> None:
    events, _cna = directory()
    await notifier.learn(*events)
    alert = first_use_event("CNA-NOT-PUBLISHED")

    await notifier.harness.feed(alert, key="mx", topic=TOPIC)
    assert await notifier.parked() == [(alert.id, "mx", ["CNA-NOT-PUBLISHED"])]
    assert await notifier.deliveries() == {}

    # After the wait, as for the other alerts: whoever is known, the rest counted.
    assert await _parking_worker(notifier, wait_seconds=0.0).run_once() == 1
    assert set(await notifier.deliveries()) == {NFP}
    text = _metrics(notifier)
    assert metric(text, "notifier_unresolved_references_total", kind="utilization") == 1


async def test_a_provider_without_nfp_or_cna_in_the_directory_gets_nothing_counted(
    notifier: Notifier,
) -> None:
    events, _cna = directory()
    await notifier.learn(*events)
    # Like a discrepancy alert to such a country: processed, with no delivery.
    for alert in (first_use_event(None, provider="pe"), report_event("pe")):
        await notifier.harness.feed(alert, key="pe", topic=TOPIC)
    assert await notifier.deliveries() == {}
    assert await notifier.parked() == []
    processed = await notifier.harness.rows(ProcessedEvent)
    assert sorted((p.event_id, p.deliveries) for p in processed) == [
        ("first-use-pe-de", 0),
        ("report-pe-2026-11", 0),
    ]
    # Never silently: counted per kind (and logged).
    text = _metrics(notifier)
    assert metric(text, "notifier_events_without_recipients_total", kind="utilization") == 2


def _parking_worker(notifier: Notifier, *, wait_seconds: float) -> ParkingWorker:
    ctx = notifier.ctx

    async def settle_parked(session: AsyncSession, event: CloudEvent[Any], force: bool) -> bool:
        return await settle(ctx, session, event, force)

    return ParkingWorker(
        ctx.sessions,
        settle_parked,
        ctx.metrics,
        wait_seconds=wait_seconds,
        view_advanced_at=time.time,
        on_settled=lambda: notifier.hooks.append("settled"),
    )


def _metrics(notifier: Notifier) -> str:
    return generate_latest(notifier.registry).decode()

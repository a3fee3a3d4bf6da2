"""Utilization alerts (``absch.utilization.v1``) through the real notifier, a real broker and
the SMTP sink: each alert reaches exactly the provider side (ABS NFP and CNA, never the user
country, the checkpoint or a PIC holder), in the recipient's language, and is mailed once
per event id whatever the copies: redelivered, re-sent, or re-sent after a restart.

The alerts are built by the monitor's own code (``services/monitor/analytics/alerts.py``),
so their ids are the deterministic ones the analytics worker sends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.monitor.analytics.alerts import first_use_event, report_event
from services.monitor.analytics.counting import FirstUse, MonthCounts
from services.notifier.adapters.tables import ProcessedEvent
from services.notifier.settings import NotifierSettings
from shared.events import CloudEvent, Topic, topic_name
from tests.support.communiques import identifier
from tests.support.mail import (
    assert_one_mail_per_event_and_address,
    consumed,
    envelope_recipients,
    mails_about,
)
from tests.support.notifier import (
    EventWriter,
    RunningNotifier,
    directory_event,
    ircc_event,
    notifier_settings,
    running_notifier,
)
from tests.support.poll import eventually
from tests.support.records import authority, checkpoint, contact, focal_point, permit
from tools.smtp_sink import SmtpSink

NFP_MX, CNA_MX, PERSON_MX = "nfp@mx.example", "cna@mx.example", "person@mx.example"
CNA2_MX = "cna2@mx.example"  # a second Mexican authority, reading Spanish
NFP_BR, CNA_BR = "nfp@br.example", "cna@br.example"
# Parties a utilization alert must never reach.
NFP_DE, CNA_DE, CHECKPOINT_DE = "nfp@de.example", "cna@de.example", "watch@de.example"
HOLDER, PROVIDER = "holder@lab.example", "provider@mx.example"


def _directory() -> tuple[list[dict[str, Any]], dict[str, str]]:
    person = contact([PERSON_MX], gov="mx")
    watcher, holder, provider = contact([CHECKPOINT_DE]), contact([HOLDER]), contact([PROVIDER])
    cna_mx = authority("mx", [CNA_MX], contacts=[{"identifier": identifier(person)}])
    cna_br = authority("br", [CNA_BR])
    cp = checkpoint("de", inform_all=True, contacts=[identifier(watcher)])
    records = [
        person,
        watcher,
        holder,
        provider,
        cna_mx,
        cna_br,
        cp,
        focal_point("mx", [NFP_MX]),
        focal_point("mx", ["cbd@mx.example"], type=["CBD-FP1"]),  # not the ABS NFP
        authority("mx", [CNA2_MX], languages=["es"]),
        focal_point("br", [NFP_BR]),
        focal_point("de", [NFP_DE]),
        authority("de", [CNA_DE]),
    ]
    ids = {
        "cna-mx": identifier(cna_mx),
        "cna-br": identifier(cna_br),
        "checkpoint": identifier(cp),
        "holder": identifier(holder),
        "provider": identifier(provider),
    }
    return records, ids


def _alerts(ids: dict[str, str], irccs: dict[str, CloudEvent[Any]]) -> dict[str, CloudEvent[Any]]:
    """The alerts of one month, as the analytics worker builds them."""
    mx, br = irccs["mx"].data, irccs["br"].data
    at = "2026-11-03T10:00:00+00:00"
    counts = MonthCounts(
        cells={f"de|{mx.identifier}": 3, f"fr|{mx.identifier}": 1},
        checkpoints={ids["checkpoint"]: 3, "CP-FR-UNKNOWN": 1},
        discrepancies={"USE_MISMATCH": 1},
    )
    return {
        # The CNA as the monitor's IRCC table has it.
        "first use mx": first_use_event(
            "mx", "de", FirstUse("ABSCH-CPC-DE-1001-1", mx.identifier, at, 7, mx.uid, ids["cna-mx"])
        ),
        # Without one: the notifier takes the IRCC's absCNA from its own view.
        "first use br": first_use_event(
            "br", "de", FirstUse("ABSCH-CPC-DE-1002-1", br.identifier, at, 8, br.uid)
        ),
        "report mx": report_event("mx", "2026-11", counts),
        # No NFP or CNA of Peru is published: nobody to mail.
        "report pe": report_event("pe", "2026-11", MonthCounts(cells={"de|IRCC-PE": 1})),
    }


def _settings(kafka: str, prefix: str, db: str, smtp: SmtpSink) -> NotifierSettings:
    return notifier_settings(kafka=kafka, prefix=prefix, db=db, smtp=smtp)


async def test_utilization_alerts_reach_exactly_the_provider_side_once(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, smtp: SmtpSink
) -> None:
    records, ids = _directory()
    irccs = {
        "mx": ircc_event(
            permit("mx", ids["cna-mx"], providers=[ids["provider"]], pic_holders=[ids["holder"]])
        ),
        "br": ircc_event(permit("br", ids["cna-br"], pic_holders=[ids["holder"]])),
    }
    alerts = _alerts(ids, irccs)
    settings = _settings(kafka_bootstrap, topic_prefix, await db_url("notifier"), smtp)
    async with EventWriter(kafka_bootstrap, topic_prefix) as writer:
        for record in records:
            await writer.send(Topic.DIRECTORY, directory_event(record))
        async with running_notifier(settings) as notifier:
            await _knows(notifier, records, irccs, writer)
            for event in alerts.values():
                await _send_alert(writer, event)
                await _send_alert(writer, event)  # a producer retry: the same event twice
            await _assert_recipients(notifier, smtp, alerts)
        mailed = list(smtp.mails)

        # The analytics worker restarts and sends every alert again; so does a new month's
        # first alert, which proves the notifier read past the copies.
        async with running_notifier(settings) as again:
            for event in alerts.values():
                await _send_alert(writer, event)
            later = first_use_event(
                "mx",
                "fr",
                FirstUse(
                    "ABSCH-CPC-FR-1003-1",
                    irccs["mx"].data.identifier,
                    "2026-12-01T08:00:00+00:00",
                    9,
                ),
            )
            await _send_alert(writer, later)
            topic = topic_name(Topic.UTILIZATION, topic_prefix)
            await eventually(
                lambda: _consumed_at_least(again, topic, len(alerts) + 1),
                what="the re-sent alerts consumed",
            )
            await eventually(
                lambda: len(mails_about(smtp, event_id=later.id)) == 3, what="the new alert"
            )

    assert smtp.mails[: len(mailed)] == mailed
    assert len(smtp.mails) == len(mailed) + 3
    assert_one_mail_per_event_and_address(smtp.mails)


async def _knows(
    notifier: RunningNotifier,
    records: list[dict[str, Any]],
    irccs: dict[str, CloudEvent[Any]],
    writer: EventWriter,
) -> None:
    """Wait until the notifier's views hold the directory and the IRCCs (whose own mails
    are not what this test is about)."""
    projection = notifier.ctx.projection
    await eventually(
        lambda: all(projection.knows(identifier(r)) for r in records), what="the directory"
    )
    for event in irccs.values():
        await writer.send(Topic.IRCC, event)
    await eventually(
        lambda: all(projection.ircc(e.data.identifier) for e in irccs.values()), what="the IRCCs"
    )


async def _send_alert(writer: EventWriter, event: CloudEvent[Any]) -> None:
    # Keyed by provider country, as the analytics worker sends them.
    await writer.send(Topic.UTILIZATION, event, key=event.data.provider_country)


async def _assert_recipients(
    notifier: RunningNotifier, smtp: SmtpSink, alerts: dict[str, CloudEvent[Any]]
) -> None:
    expected = {
        "first use mx": {NFP_MX, CNA_MX, PERSON_MX},
        "first use br": {NFP_BR, CNA_BR},
        "report mx": {NFP_MX, CNA_MX, PERSON_MX, CNA2_MX},
    }
    for name, want in expected.items():
        await eventually(_mailed(smtp, alerts[name].id, want), what=f"the mails of {name}")
    await eventually(
        lambda: _processed(notifier, alerts["report pe"].id), what="the report to Peru handled"
    )
    assert mails_about(smtp, event_id=alerts["report pe"].id) == []
    utilization = [m for m in smtp.mails if m.header("X-ABSCH-Template").startswith("util")]
    assert len(utilization) == sum(map(len, expected.values()))  # nobody else, nothing twice
    first_use = mails_about(smtp, event_id=alerts["first use mx"].id)
    assert {m.header("X-ABSCH-Template") for m in first_use} == {"utilization_first_use"}
    assert all(
        "Your genetic resources are now being utilized in Germany." in m.body() for m in first_use
    )
    report = {m.recipient.lower(): m for m in mails_about(smtp, event_id=alerts["report mx"].id)}
    assert report[CNA2_MX].subject == "Informe mensual de utilización MX:2026-11 (México)"
    assert report[NFP_MX].subject == "Monthly utilization report MX:2026-11 (Mexico)"
    assert "Germany (3); France (1)" in report[NFP_MX].body()


def _mailed(smtp: SmtpSink, event_id: str, want: set[str]) -> Callable[[], bool]:
    return lambda: envelope_recipients(mails_about(smtp, event_id=event_id)) == want


async def _processed(notifier: RunningNotifier, event_id: str) -> bool:
    async with notifier.ctx.sessions() as session:
        return await session.get(ProcessedEvent, event_id) is not None


async def _consumed_at_least(notifier: RunningNotifier, topic: str, count: int) -> bool:
    return await consumed(notifier.client, "notifier", topic) >= count

"""A finding's case is written in the finding's transaction, once per event.

The checking worker opens a case when it flags a finding and clears it when the finding
stops holding, in the transaction that stores the finding and stages its event. The case
projection consumer, still subscribed to the discrepancy topic, leaves them alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.monitor.adapters.tables import CaseRow, DeliveryFailureRow, FindingsRow
from services.monitor.cases import CaseStore
from shared.db import create_engine, session_factory
from shared.events import new_event, topic_name
from shared.events.models import NotificationOutcome
from tests.integration.monitor.checking import (
    checking,
    cpc_event,
    ircc_event,
)
from tests.support.kafka import TopicReader
from tests.support.monitor import running_monitor
from tests.support.workload import Workload

CP = "T-CP-CASES"


class Killed(Exception):
    """The process died before its transaction committed."""


class DyingSession(Session):
    """A session whose every transaction dies after writing everything, before commit."""


WRITTEN_BEFORE_DEATH: list[tuple[int, int]] = []


def _die(session: Session) -> None:
    session.flush()  # findings, outbox rows and cases are all in the database's transaction
    findings = session.scalar(select(func.count()).select_from(FindingsRow))
    cases = session.scalar(select(func.count()).select_from(CaseRow))
    WRITTEN_BEFORE_DEATH.append((int(findings or 0), int(cases or 0)))
    raise Killed


sa_event.listen(DyingSession, "before_commit", _die)


def _history(case: CaseRow) -> list[tuple[str, str]]:
    return [(h["action"], h["status"]) for h in case.history]


async def test_a_flagged_finding_opens_its_case_in_its_transaction(db_url: Any) -> None:
    url = await db_url("monitor")
    unknown_ircc = cpc_event(1, irccs=[1], checkpoints=[])
    async with checking(url, grace_seconds=0, session_class=DyingSession) as dying:
        WRITTEN_BEFORE_DEATH.clear()
        with pytest.raises(Killed):
            await dying.feed(unknown_ircc)
        assert WRITTEN_BEFORE_DEATH == [(1, 1)]  # the finding and its case, uncommitted
        assert await dying.findings() == {}
        assert await dying.cases() == {}
        assert await dying.staged() == []

    async with checking(url, grace_seconds=0) as mon:
        await mon.feed(unknown_ircc)  # the redelivery after the crash
        [flagged] = await mon.staged()
        assert flagged.type == "discrepancy.flagged"
        assert flagged.data.rule == "IRCC_UNKNOWN"
        [case] = (await mon.cases()).values()
        assert case.id == flagged.data.id
        assert (case.rule, case.cpc_uid, case.status) == (
            "IRCC_UNKNOWN",
            unknown_ircc.subject,
            "open",
        )
        assert case.last_event_id == flagged.id
        assert _history(case) == [("flagged", "open")]
        assert case.history[0]["actor"] == "monitor"

        await mon.feed(unknown_ircc)  # delivered once more: nothing new
        assert len(await mon.staged()) == 1
        assert _history((await mon.cases())[case.id]) == [("flagged", "open")]


async def test_a_cleared_finding_clears_its_case_and_redelivery_adds_nothing(
    db_url: Any,
) -> None:
    url = await db_url("monitor")
    events = [cpc_event(1, irccs=[1], checkpoints=[]), ircc_event(1)]
    async with checking(url, grace_seconds=0) as mon:
        await mon.feed(*events)
        flagged, cleared = await mon.staged()
        assert (flagged.type, cleared.type) == ("discrepancy.flagged", "discrepancy.cleared")
        [case] = (await mon.cases()).values()
        assert (case.id, case.status, case.last_event_id) == (
            cleared.data.id,
            "cleared",
            cleared.id,
        )
        assert _history(case) == [("flagged", "open"), ("cleared", "cleared")]

        await mon.feed(*events)
        await mon.feed(*reversed(events))
        assert len(await mon.staged()) == 2
        assert _history((await mon.cases())[case.id]) == [
            ("flagged", "open"),
            ("cleared", "cleared"),
        ]

        # The case projection consumer reads the same events back from the topic.
        store = CaseStore(mon.sessions, mon.relay, "test.", lambda: cleared.time)
        for staged in [flagged, cleared, flagged]:
            await store.on_event(staged)
        after = (await mon.cases())[case.id]
        assert after.status == "cleared"
        assert _history(after) == [("flagged", "open"), ("cleared", "cleared")]


async def test_the_case_projection_still_keeps_failed_deliveries(db_url: Any) -> None:
    url = await db_url("monitor")
    outcome = NotificationOutcome(
        event_id="e-1", subject="ABSCH-CPC-DE-1-1", recipient="a@x", template="t", attempts=3
    )
    failed = new_event("notification.failed", source="notifier", subject="s", data=outcome)
    async with checking(url) as mon:
        store = CaseStore(mon.sessions, mon.relay, "test.", lambda: failed.time)
        await store.on_event(failed)
        await store.on_event(failed)
        async with mon.sessions() as session:
            rows = list(await session.scalars(select(DeliveryFailureRow)))
        assert [r.event_id for r in rows] == [failed.id]


async def test_cases_through_the_broker_have_one_history_entry_per_finding_event(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path
) -> None:
    """The whole monitor: the worker writes each case with its finding, so once an event is
    on the topic its case is committed (the relay reads only committed rows)."""
    cpc, ircc = cpc_event(1, irccs=[1], checkpoints=[]), ircc_event(1)
    db = await db_url("monitor")
    discrepancies = topic_name("absch.discrepancy.v1", topic_prefix)
    async with running_monitor(
        kafka=kafka_bootstrap, prefix=topic_prefix, db=db, unknown_grace_seconds=0
    ) as (_client, _app):
        await Workload(events=[("absch.cpc.v1", "ABSCH-CPC-DE-1", cpc)]).produce(
            kafka_bootstrap, topic_prefix
        )
        async with TopicReader(kafka_bootstrap, discrepancies) as reader:
            await reader.read_until(lambda evs: len(evs) >= 1)
            await Workload(events=[("absch.ircc.v1", "ABSCH-IRCC-MX-1", ircc)]).produce(
                kafka_bootstrap, topic_prefix
            )
            events = await reader.read_until(lambda evs: len(evs) >= 2)
        assert [e.type for e in events] == ["discrepancy.flagged", "discrepancy.cleared"]

    engine = create_engine(db)
    try:
        async with session_factory(engine)() as session:
            [case] = await session.scalars(select(CaseRow))
    finally:
        await engine.dispose()
    assert (case.id, case.status, case.last_event_id) == (
        events[1].data.id,
        "cleared",
        events[1].id,
    )
    assert _history(case) == [("flagged", "open"), ("cleared", "cleared")]

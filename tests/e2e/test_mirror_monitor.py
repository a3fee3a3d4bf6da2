"""Mirrored data through the whole stack: the mirror writes the registry's database, the
registry's relay publishes the events, the monitor flags discrepancies on them and the
notifier mails only when the mirror is asked to (``--notify``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from services.notifier.adapters.tables import DeliveryRow, ProcessedEvent
from tests.support.absch_source import ClearingHouse, incremental_changes, run_mirror
from tests.support.mail import mails_about
from tests.support.poll import eventually
from tests.support.registry import ADMIN_TOKEN, auth, create_user
from tests.support.servers import serving
from tests.support.stack import Stack, running_stack
from tools.smtp_sink import SmtpSink

REVOKED = "ABSCH-IRCC-AF-207608-2"


async def _flagged(stack: Stack, token: str) -> set[tuple[str, str]]:
    resp = await stack.monitor.get("/v1/discrepancies", headers=auth(token))
    assert resp.status_code == 200, resp.text
    return {(c["rule"], c["cpc_uid"]) for c in resp.json()["items"]}


async def _mailed_nobody(stack: Stack, subjects: set[str]) -> bool:
    """The notifier handled the events about ``subjects`` and queued no mail for them."""
    async with stack.notifier_app.state.ctx.sessions() as session:
        done = set(await session.scalars(select(ProcessedEvent.event_id)))
        queued = set(await session.scalars(select(DeliveryRow.subject)))
    assert not queued & subjects, queued & subjects
    return len(done) >= len(subjects)


async def test_the_monitor_flags_a_revoked_ircc_cited_by_mirrored_communiques(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path, smtp: SmtpSink
) -> None:
    source = ClearingHouse()
    source.load()
    async with (
        running_stack(
            kafka=kafka_bootstrap,
            prefix=topic_prefix,
            db_url=db_url,
            tmp=tmp_path,
            smtp=smtp,
            monitor_extra={"unknown_grace_seconds": 0},
        ) as stack,
        serving(source.app) as url,
    ):
        db = stack.registry.app.state.ctx.settings.database_url  # type: ignore[attr-defined]
        admin = await create_user(stack.registry, ADMIN_TOKEN, "admin")
        first = await run_mirror(db, url, topic_prefix)
        assert first.mirrored == 6
        # Mail is off by default: the IRCCs and the CPC are handled, nobody is mailed.
        quiet = {"ABSCH-IRCC-AF-207443-1", "ABSCH-IRCC-AF-207608-1", "ABSCH-CPC-AF-263001-1"}
        await eventually(lambda: _mailed_nobody(stack, quiet), what="mirrored events handled")

        incremental_changes(source)  # revokes CB51626B; a new CPC cites it
        second = await run_mirror(db, url, topic_prefix, notify=True)
        assert second.mirrored == 3

        async def both_flagged() -> bool:
            found = await _flagged(stack, admin)
            return {
                ("IRCC_REVOKED", "ABSCH-CPC-AF-263002-1"),
                ("IRCC_REVOKED", "ABSCH-CPC-AF-263001-1"),
            } <= found

        await eventually(both_flagged, timeout=60, what="IRCC_REVOKED flagged on mirrored CPCs")
        # Asked to notify: the revocation reaches the issuing CNA's addresses.
        await eventually(
            lambda: (
                {m.recipient for m in mails_about(smtp, subject=REVOKED)}
                >= {"email@cbd.int", "abs-cna@af.example"}
            ),
            timeout=60,
            what="the revocation mailed to the CNA",
        )
        assert not mails_about(smtp, subject="ABSCH-IRCC-AF-207608-1")

"""Discrepancy cases: opened and cleared with their findings, worked by people.

A flagged finding opens its case and a cleared one sets it ``cleared``, in the checking
worker's transaction that stores the finding and stages its ``discrepancy.*`` event
(:func:`apply_finding_event`). The provider country's CNA or NFP acknowledges, resolves
(with a note) or reopens it; every action is a ``discrepancy.case_updated`` event,
committed with the case through the outbox. ``notification.failed`` events are kept for
the dashboard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.monitor.adapters.tables import CaseRow, DeliveryFailureRow, OutboxRow
from shared.auth import Principal, Role
from shared.events import CloudEvent, Topic, new_event
from shared.events.models import DiscrepancyEvent, NotificationOutcome
from shared.kit.outbox import OutboxRelay, stage

FINDING_EVENTS = {"discrepancy.flagged": "open", "discrepancy.cleared": "cleared"}  # -> status
ACTIONS: dict[str, tuple[frozenset[str], str]] = {
    "acknowledge": (frozenset({"open"}), "acknowledged"),
    "resolve": (frozenset({"open", "acknowledged"}), "resolved"),
    "reopen": (frozenset({"acknowledged", "resolved", "cleared"}), "open"),
}


class CaseNotFound(Exception):
    """No such case (or not visible to the caller)."""


class CaseForbidden(Exception):
    """The caller may not act on this case."""


class CaseConflict(Exception):
    """The action does not apply to the case's status."""


@dataclass
class CaseStore:
    """Cases in the monitor's database."""

    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    topic_prefix: str
    clock: Callable[[], datetime]

    async def on_event(self, event: CloudEvent[Any]) -> None:
        """Keep ``notification.failed`` events (idempotent on event id).

        ``discrepancy.*`` events are ignored: the checking worker opens and clears cases
        in the transaction that raises their findings (:func:`apply_finding_event`), and
        people's actions write theirs, so reading them back here would only repeat them.
        """
        if isinstance(event.data, NotificationOutcome) and event.type == "notification.failed":
            await self._failure(event)

    async def _failure(self, event: CloudEvent[Any]) -> None:
        data: NotificationOutcome = event.data
        async with self.sessions() as session:
            if await session.get(DeliveryFailureRow, event.id) is None:
                session.add(
                    DeliveryFailureRow(
                        event_id=event.id,
                        subject=data.subject,
                        template=data.template,
                        error=data.error,
                        at=event.time,
                    )
                )
                await session.commit()

    async def act(
        self, principal: Principal, case_id: str, action: str, note: str | None
    ) -> CaseRow:
        """Apply a person's action and emit ``discrepancy.case_updated``."""
        allowed_from, target = ACTIONS[action]
        async with self.sessions() as session:
            case = await session.get(CaseRow, case_id, with_for_update=True)
            if case is None or not can_see(principal, case):
                raise CaseNotFound(case_id)
            if not principal.is_admin and principal.role not in {Role.CNA, Role.NFP}:
                raise CaseForbidden("only the provider country's CNA or NFP works cases")
            if case.status not in allowed_from:
                raise CaseConflict(f"cannot {action} a case that is {case.status}")
            if action == "resolve" and not (note and note.strip()):
                raise CaseConflict("a note is required to resolve")
            now = self.clock()
            case.status, case.updated_at = target, now
            case.history = [
                *case.history,
                {
                    "at": now.isoformat(),
                    "actor": principal.id,
                    "action": action,
                    "status": target,
                    "note": note,
                },
            ]
            data = DiscrepancyEvent(
                id=case.id,
                rule=case.rule,
                cpc_uid=case.cpc_uid,
                ircc_uid=case.ircc_uid,
                provider_country=case.provider_country,
                user_country=case.user_country,
                evidence=case.evidence,
                status=target,
                note=note,
                actor=principal.id,
            )
            event = new_event(
                "discrepancy.case_updated", source="monitor", subject=case.cpc_uid, data=data
            )
            stage(session, OutboxRow, f"{self.topic_prefix}{Topic.DISCREPANCY}", event, key=case.id)
            await session.commit()
        self.relay.wake()
        return case

    async def list(
        self,
        principal: Principal,
        *,
        provider: str | None,
        user: str | None,
        status: str | None,
        rule: str | None,
        limit: int,
        offset: int,
    ) -> tuple[int, list[CaseRow]]:
        """Cases the caller may see, newest first."""
        query = select(CaseRow)
        if not principal.is_admin:
            if principal.role not in READERS:
                return 0, []
            query = query.where(CaseRow.provider_country == principal.government)
        if provider:
            query = query.where(CaseRow.provider_country == provider.lower())
        if user:
            query = query.where(CaseRow.user_country == user.lower())
        if status:
            query = query.where(CaseRow.status == status)
        if rule:
            query = query.where(CaseRow.rule == rule)
        async with self.sessions() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = await session.scalars(
                query.order_by(CaseRow.flagged_at.desc(), CaseRow.id).offset(offset).limit(limit)
            )
            return int(total or 0), list(rows)

    async def get(self, principal: Principal, case_id: str) -> CaseRow:
        """One case the caller may see."""
        async with self.sessions() as session:
            case = await session.get(CaseRow, case_id)
        if case is None or not can_see(principal, case):
            raise CaseNotFound(case_id)
        return case

    async def summary(self) -> dict[str, Any]:
        """Counts for the dashboard: open cases by rule and by provider country, failures."""
        async with self.sessions() as session:
            live = CaseRow.status.in_(("open", "acknowledged"))
            by_rule = dict(
                (
                    await session.execute(
                        select(CaseRow.rule, func.count()).where(live).group_by(CaseRow.rule)
                    )
                ).all()
            )
            by_country = dict(
                (
                    await session.execute(
                        select(CaseRow.provider_country, func.count())
                        .where(live)
                        .group_by(CaseRow.provider_country)
                    )
                ).all()
            )
            by_status = dict(
                (
                    await session.execute(
                        select(CaseRow.status, func.count()).group_by(CaseRow.status)
                    )
                ).all()
            )
            failures = await session.scalar(select(func.count()).select_from(DeliveryFailureRow))
        return {
            "by_rule": by_rule,
            "by_country": {k or "?": v for k, v in by_country.items()},
            "by_status": by_status,
            "failed_deliveries": int(failures or 0),
        }


async def apply_finding_event(session: AsyncSession, event: CloudEvent[Any]) -> bool:
    """Open (``discrepancy.flagged``) or clear (``discrepancy.cleared``) a finding's case in
    the caller's transaction; True when the case changed.

    Idempotent on the event id: the case remembers the last monitor event applied to it.
    Other event types change nothing.
    """
    if event.type not in FINDING_EVENTS or not isinstance(event.data, DiscrepancyEvent):
        return False
    case = await session.get(CaseRow, event.data.id, with_for_update=True)
    return _fold_finding_event(session, case, event) is not None


# Built once: building a statement costs more than running it.
_LOCK_CASES = (
    select(CaseRow)
    .where(CaseRow.id.in_(bindparam("ids", expanding=True)))
    .order_by(CaseRow.id)
    .with_for_update()
)
_INSERT_CASES = insert(cast(Table, CaseRow.__table__))


async def apply_finding_events(session: AsyncSession, events: list[CloudEvent[Any]]) -> None:
    """:func:`apply_finding_event` for many events, in order: their cases are locked and
    read in one query (a batch of CPCs raises many)."""
    ids = sorted(
        {
            e.data.id
            for e in events
            if e.type in FINDING_EVENTS and isinstance(e.data, DiscrepancyEvent)
        }
    )
    if not ids:
        return
    rows = await session.scalars(_LOCK_CASES, {"ids": ids})
    cases: dict[str, CaseRow] = {row.id: row for row in rows}
    # Cases opened here are folded as values and inserted in one executemany: the ORM's
    # flush of as many new objects cost several times as much.
    opened: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.type not in FINDING_EVENTS or not isinstance(event.data, DiscrepancyEvent):
            continue
        case = cases.get(event.data.id)
        if case is not None:
            _fold_finding_event(session, case, event)
            continue
        values = opened.get(event.data.id)
        if values is None:
            opened[event.data.id] = _opened_case(event)
        elif values["last_event_id"] != event.id:  # else applied already
            _fold_values(values, event)
    if opened:
        await session.execute(_INSERT_CASES, list(opened.values()))


def _opened_case(event: CloudEvent[Any]) -> dict[str, Any]:
    """The values of the case a finding event opens, the event folded in."""
    data: DiscrepancyEvent = event.data
    values: dict[str, Any] = {
        "id": data.id,
        "rule": data.rule,
        "cpc_uid": data.cpc_uid,
        "ircc_uid": data.ircc_uid,
        "provider_country": data.provider_country,
        "user_country": data.user_country,
        "evidence": data.evidence,
        "history": [],
        "flagged_at": event.time,
    }
    _fold_values(values, event)
    return values


def _fold_values(values: dict[str, Any], event: CloudEvent[Any]) -> None:
    """:func:`_fold_finding_event` on a case's values (status, last event, history)."""
    status = FINDING_EVENTS[event.type]
    values["status"], values["last_event_id"], values["updated_at"] = status, event.id, event.time
    values["history"] = [*values["history"], _history_entry(event, status)]


def _fold_finding_event(
    session: AsyncSession, case: CaseRow | None, event: CloudEvent[Any]
) -> CaseRow | None:
    """Fold a finding event into its (locked) case, adding one if none: the case when it
    changed, None when the event was applied already."""
    if case is None:
        case = CaseRow(**_opened_case(event))
        session.add(case)
        return case
    if case.last_event_id == event.id:
        return None
    status = FINDING_EVENTS[event.type]
    case.status, case.last_event_id, case.updated_at = status, event.id, event.time
    case.history = [*case.history, _history_entry(event, status)]
    return case


def _history_entry(event: CloudEvent[Any], status: str) -> dict[str, Any]:
    return {
        "at": event.time.isoformat(),
        "actor": "monitor",
        "action": event.type.split(".")[1],
        "status": status,
    }


READERS = frozenset({Role.NFP, Role.CNA, Role.PA, Role.NAU})


def can_see(principal: Principal, case: CaseRow) -> bool:
    """Only the provider country's authorities (and the Secretariat) see a case."""
    if principal.is_admin:
        return True
    return principal.role in READERS and principal.government == case.provider_country

"""The alerts of the utilization analytics, on ``absch.utilization.v1``.

Their event ids are derived from what they are about (UUID v5), so an alert sent again
after a restart carries the same id and the notifier drops the copy.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from services.monitor.analytics.counting import FirstUse, MonthCounts, month_window
from shared.events import CloudEvent, new_event
from shared.events.models import IrccUtilization, UtilizationFirstUse, UtilizationReport

_IDS = uuid.UUID("6f1c2a4e-52b1-4c7e-9a57-3d0f6c1b8e21")  # namespace of alert event ids
SOURCE = "monitor"


def alert_id(*parts: str) -> str:
    """Deterministic event id of an alert: the same alert always has the same id."""
    return str(uuid.uuid5(_IDS, "/".join(parts)))


def first_use_event(provider: str, user: str, first: FirstUse) -> CloudEvent[Any]:
    """``utilization.first_use`` for a (provider, user) pair, with its derived id."""
    data = UtilizationFirstUse(
        provider_country=provider,
        user_country=user,
        ircc=first.ircc,
        ircc_uid=first.ircc_uid,
        cna=first.cna,
        cpc_uid=first.cpc_uid,
        cited_at=datetime.fromisoformat(first.at),
    )
    return new_event(
        "utilization.first_use",
        source=SOURCE,
        subject=first.cpc_uid,
        data=data,
        event_id=alert_id("first_use", provider, user),
    )


def report_data(provider: str, month: str, counts: MonthCounts) -> UtilizationReport:
    """The monthly report of one provider country from its month's counts."""
    users: dict[str, int] = {}
    irccs: dict[str, dict[str, int]] = {}
    for cell, n in sorted(counts.cells.items()):
        user, ircc = cell.split("|", 1)
        users[user] = users.get(user, 0) + n
        irccs.setdefault(ircc, {})[user] = n
    start, end = month_window(month)
    return UtilizationReport(
        provider_country=provider,
        month=month,
        window_start=start,
        window_end=end,
        citations=sum(users.values()),
        users=users,
        irccs=[
            IrccUtilization(ircc=i, citations=sum(u.values()), users=u)
            for i, u in sorted(irccs.items())
        ],
        checkpoints=dict(sorted(counts.checkpoints.items())),
        discrepancies=dict(sorted(counts.discrepancies.items())),
    )


def report_event(provider: str, month: str, counts: MonthCounts) -> CloudEvent[Any]:
    """``utilization.report`` for a provider country and month, with its derived id."""
    return new_event(
        "utilization.report",
        source=SOURCE,
        subject=f"{provider}:{month}",
        data=report_data(provider, month, counts),
        event_id=alert_id("report", provider, month),
    )

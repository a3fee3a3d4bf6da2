"""The event catalogue: type string -> topic, payload model, schema version."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events.envelope import EventData
from shared.events.models import (
    CpcAmended,
    CpcPublished,
    DirectoryRecordPublished,
    DirectoryRecordWithdrawn,
    DiscrepancyEvent,
    IrccEvent,
    NotificationOutcome,
    UserDeactivated,
    UtilizationFirstUse,
    UtilizationReport,
)
from shared.events.topics import Topic


@dataclass(frozen=True, slots=True)
class EventSpec:
    """What a type string means on the wire."""

    name: str
    topic: Topic
    model: type[EventData]
    version: int = 1


_SPECS = [
    EventSpec("directory.record.published", Topic.DIRECTORY, DirectoryRecordPublished),
    EventSpec("directory.record.withdrawn", Topic.DIRECTORY, DirectoryRecordWithdrawn),
    EventSpec("directory.user.deactivated", Topic.DIRECTORY, UserDeactivated),
    EventSpec("ircc.published", Topic.IRCC, IrccEvent),
    EventSpec("ircc.amended", Topic.IRCC, IrccEvent),
    EventSpec("ircc.revoked", Topic.IRCC, IrccEvent),
    EventSpec("cpc.published", Topic.CPC, CpcPublished),
    EventSpec("cpc.amended", Topic.CPC, CpcAmended),
    EventSpec("discrepancy.flagged", Topic.DISCREPANCY, DiscrepancyEvent),
    EventSpec("discrepancy.cleared", Topic.DISCREPANCY, DiscrepancyEvent),
    EventSpec("discrepancy.case_updated", Topic.DISCREPANCY, DiscrepancyEvent),
    EventSpec("utilization.first_use", Topic.UTILIZATION, UtilizationFirstUse),
    EventSpec("utilization.report", Topic.UTILIZATION, UtilizationReport),
    EventSpec("notification.delivered", Topic.NOTIFICATION, NotificationOutcome),
    EventSpec("notification.failed", Topic.NOTIFICATION, NotificationOutcome),
]

CATALOG: dict[str, EventSpec] = {spec.name: spec for spec in _SPECS}


def spec_for(event_type: str) -> EventSpec:
    """Look a type up; ``KeyError`` names it when it is not in the catalogue."""
    try:
        return CATALOG[event_type]
    except KeyError:
        raise KeyError(f"unknown event type {event_type!r}") from None

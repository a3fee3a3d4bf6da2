"""Typed payloads (``data``) of every event type in DESIGN.md §3.

Records travel in the real ABSCH JSON shape (see ``shared.records``) as plain objects so
that an event stays decodable even when publication rules tighten later; confidential
parts are already absent when an event is built.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, Field

from shared.events.envelope import EventData

LString = dict[str, str]


class DirectoryRecordPublished(EventData):
    """A directory record (focalPoint, authority, contact, absCheckpoint) revision went public."""

    uid: str = Field(description="UID with revision, e.g. ABSCH-CNA-AF-1203-1")
    schema_: str = Field(alias="schema", description="record schema name")
    identifier: str = Field(description="header.identifier of the record")
    document_id: int = Field(ge=1)
    revision: int = Field(ge=1)
    government: str | None = Field(default=None, description="ISO-2 lower case")
    record: dict[str, Any] = Field(description="the published revision, ABSCH JSON shape")
    mirrored_from: str | None = Field(
        default=None,
        description="base URL of the clearing-house the record is mirrored from; absent for "
        "a record published here",
    )


class DirectoryRecordWithdrawn(EventData):
    """A directory record is no longer published; it stops counting for recipients."""

    uid: str
    schema_: str = Field(alias="schema")
    identifier: str
    document_id: int = Field(ge=1)
    government: str | None = None
    reason: str | None = None


class UserDeactivated(EventData):
    """The registry deactivated a user: every service refuses its tokens from now on.

    Only the id and the moment travel, never a name, an address or a role.
    """

    user_id: str = Field(min_length=1, max_length=64, description="id of the deactivated user")
    deactivated_at: AwareDatetime = Field(description="when the registry deactivated it")


class IrccEvent(EventData):
    """An IRCC revision was published, amended or revoked (same payload for the three types)."""

    uid: str = Field(description="UID of this revision, e.g. ABSCH-IRCC-MX-207443-2")
    identifier: str
    document_id: int = Field(ge=1)
    revision: int = Field(ge=1)
    government: str
    reason: LString | None = Field(default=None, description="amendmentDescription")
    record: dict[str, Any] = Field(description="the revision, confidential parts absent")
    mirrored_from: str | None = Field(
        default=None,
        description="base URL of the clearing-house the record is mirrored from; absent for "
        "a record published here",
    )
    notify: bool = Field(
        default=True,
        description="false: mail nobody about this revision (a mirrored record, whose "
        "source has mailed already)",
    )


class CpcPublished(EventData):
    """A checkpoint communiqué was published."""

    uid: str = Field(description="e.g. ABSCH-CPC-DE-1001-1")
    identifier: str
    document_id: int = Field(ge=1)
    revision: int = Field(ge=1)
    government: str = Field(description="country issuing the CPC (user country)")
    checkpoints: list[str] = Field(description="identifiers of the cited checkpoints")
    submitted_by: str | None = Field(default=None, description="user id of the submitter")
    record: dict[str, Any]
    mirrored_from: str | None = Field(
        default=None,
        description="base URL of the clearing-house the record is mirrored from; absent for "
        "a record published here",
    )
    notify: bool = Field(
        default=True,
        description="false: mail nobody about this revision (a mirrored record, whose "
        "source has mailed already)",
    )


class CpcAmended(CpcPublished):
    """A published communiqué was amended: revision n+1 replaces the older revision, which
    stays readable as archived. ``record`` is the new revision, whole."""

    reason: LString = Field(description="why the submitter amended it (lstring)")
    previous_uid: str = Field(description="UID of the revision this one replaces")
    changed: list[str] = Field(
        default_factory=list,
        description="names of the fields whose values differ from the previous revision",
    )


DiscrepancyStatus = Literal["open", "acknowledged", "resolved", "cleared"]


class DiscrepancyEvent(EventData):
    """A discrepancy between a CPC and an IRCC (flagged, cleared or worked as a case)."""

    id: str = Field(description="hash of CPC uid + rule + IRCC uid")
    rule: str
    cpc_uid: str
    ircc_uid: str | None = None
    provider_country: str | None = None
    user_country: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    status: DiscrepancyStatus = "open"
    note: str | None = None
    actor: str | None = None


class NotificationOutcome(EventData):
    """Result of one e-mail delivery attempt series."""

    event_id: str = Field(description="id of the event that caused the mail")
    subject: str = Field(description="record UID the mail is about")
    recipient: str
    template: str
    attempts: int = Field(ge=0)
    error: str | None = None


class UtilizationFirstUse(EventData):
    """The first CPC from a user country citing any IRCC of a provider country was counted.

    Sent once per (provider, user) pair: the event id is derived from the pair, so a
    restart that sends it again is deduplicated by the notifier.
    """

    provider_country: str = Field(description="government of the cited IRCC, ISO-2 lower case")
    user_country: str = Field(description="government of the CPC, ISO-2 lower case")
    ircc: str = Field(description="identifier of the cited IRCC, as cited (revision-less)")
    ircc_uid: str | None = Field(default=None, description="UID of the IRCC revision known")
    cna: str | None = Field(default=None, description="absCNA identifier of the IRCC")
    cpc_uid: str = Field(description="UID of the CPC revision that was first")
    cited_at: AwareDatetime = Field(description="when that CPC revision was published")


class IrccUtilization(EventData):
    """Citations of one IRCC within a report's month."""

    ircc: str
    citations: int = Field(ge=0)
    users: dict[str, int] = Field(description="user country -> citations")


class UtilizationReport(EventData):
    """Monthly utilization of a provider country's IRCCs (one per country and month).

    The event id is derived from the country and the month, so it is sent once whatever
    restarts happen (the notifier deduplicates by event id).
    """

    provider_country: str
    month: str = Field(pattern=r"^\d{4}-\d{2}$", description="calendar month, UTC")
    window_start: AwareDatetime
    window_end: AwareDatetime = Field(description="exclusive")
    citations: int = Field(ge=0, description="CPC revisions counted, one per cited IRCC")
    users: dict[str, int] = Field(description="user country -> citations")
    irccs: list[IrccUtilization]
    checkpoints: dict[str, int] = Field(description="checkpoint identifier -> citations")
    discrepancies: dict[str, int] = Field(description="rule -> discrepancies flagged")

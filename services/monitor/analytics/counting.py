"""Pure rules of the utilization analytics: what a message does to the tables.

No faust here: the app (``app.py``) reads the table entries, calls these functions and
writes back what they return, so every rule is testable without a broker.

Idempotence, per table entry (faust sends each entry's new value as one changelog
message, so an entry is written whole or not at all):

- An entry keyed by provider country is only written from one partition of the
  ``by-provider`` topic, in offset order. It keeps ``applied``, the offset of the last
  message folded into it: a message at or below it is already in (a redelivery after a
  crash, whichever of the entries it touched reached the changelog).
- ``counted`` maps a citation (CPC revision UID + IRCC) or a discrepancy event id to the
  offset that counted it: the same citation at another offset is a duplicate (a resend
  after a crash upstream) and changes nothing.
- Alerts are marked with the offset that raised them and sent again when that offset is
  replayed; their event ids are derived from what they are about, so the notifier drops
  the repeats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from shared.events import CloudEvent
from shared.events.models import CpcPublished, DiscrepancyEvent, IrccEvent


class _Routed(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class IrccFacts(_Routed):
    """What analytics keeps of an IRCC revision (``by-ircc`` topic, keyed by identifier)."""

    kind: Literal["ircc"] = "ircc"
    identifier: str
    uid: str
    provider: str
    subject: str | None = None
    usages: list[str] = Field(default_factory=list)
    cna: str | None = None


class Citation(_Routed):
    """One IRCC cited by one CPC revision; ``provider`` is set once the IRCC is known."""

    kind: Literal["citation"] = "citation"
    cpc_uid: str
    user: str
    ircc: str
    checkpoints: list[str] = Field(default_factory=list)
    at: AwareDatetime
    provider: str | None = None
    ircc_uid: str | None = None
    cna: str | None = None

    @property
    def key(self) -> str:
        """Key of the ``counted`` table: the CPC revision and the IRCC it cites."""
        return f"{self.cpc_uid}|{self.ircc}"


class Flag(_Routed):
    """A flagged discrepancy, routed to its provider country."""

    kind: Literal["discrepancy"] = "discrepancy"
    event_id: str
    provider: str
    user: str
    rule: str
    at: AwareDatetime

    @property
    def key(self) -> str:
        """Key of the ``counted`` table."""
        return f"discrepancy|{self.event_id}"


Routed = Annotated[IrccFacts | Citation | Flag, Field(discriminator="kind")]
ROUTED: TypeAdapter[IrccFacts | Citation | Flag] = TypeAdapter(Routed)


def month_of(at: datetime) -> str:
    """Calendar month (UTC) of a moment, ``YYYY-MM``."""
    return at.astimezone(UTC).strftime("%Y-%m")


def month_window(month: str) -> tuple[datetime, datetime]:
    """Start (inclusive) and end (exclusive) of a calendar month, UTC."""
    year, mon = (int(p) for p in month.split("-"))
    start = datetime(year, mon, 1, tzinfo=UTC)
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=UTC)
    return start, end


def _refs(record: dict[str, Any], name: str) -> list[str]:
    out = []
    for ref in record.get(name) or []:
        ident = ref.get("identifier") if isinstance(ref, dict) else None
        if isinstance(ident, str) and ident:
            out.append(ident.split("@", 1)[0])
    return out


def facts_of(data: IrccEvent) -> IrccFacts:
    """The facts of an IRCC revision (government, subject, usages, CNA)."""
    record = data.record
    subject = record.get("subjectMatter")
    cna = record.get("absCNA")
    return IrccFacts(
        identifier=data.identifier,
        uid=data.uid,
        provider=data.government.lower(),
        subject=(subject.get("en") or next(iter(subject.values()), None))
        if isinstance(subject, dict) and subject
        else None,
        usages=_refs(record, "usages"),
        cna=cna.get("identifier") if isinstance(cna, dict) else None,
    )


def citations_of(event: CloudEvent[Any]) -> list[Citation]:
    """One citation per distinct IRCC a CPC revision cites (none when it cites none)."""
    data: CpcPublished = event.data
    idents = list(dict.fromkeys(_refs(data.record, "absIRCCs")))
    return [
        Citation(
            cpc_uid=data.uid,
            user=data.government.lower(),
            ircc=ident,
            checkpoints=list(data.checkpoints),
            at=event.time,
        )
        for ident in idents
    ]


def flag_of(event: CloudEvent[Any]) -> Flag | None:
    """A ``discrepancy.flagged`` event with a provider country, as a routed flag."""
    data: DiscrepancyEvent = event.data
    if event.type != "discrepancy.flagged" or not data.provider_country:
        return None
    return Flag(
        event_id=event.id,
        provider=data.provider_country.lower(),
        user=data.user_country.lower(),
        rule=data.rule,
        at=event.time,
    )


def resolve(citation: Citation, facts: IrccFacts) -> Citation:
    """The citation attributed to the IRCC's provider country."""
    return citation.model_copy(
        update={"provider": facts.provider, "ircc_uid": facts.uid, "cna": facts.cna}
    )


@dataclass
class MonthCounts:
    """Table ``months``, key ``<provider>|<YYYY-MM>``: one provider country's month."""

    applied: int = -1
    cells: dict[str, int] = field(default_factory=dict)  # "<user>|<ircc>" -> citations
    checkpoints: dict[str, int] = field(default_factory=dict)
    discrepancies: dict[str, int] = field(default_factory=dict)  # rule -> flagged

    @classmethod
    def load(cls, raw: dict[str, Any] | None) -> MonthCounts:
        """From a table value (None: an empty month); copies, the table keeps its own."""
        if not raw:
            return cls()
        return cls(
            applied=raw["applied"],
            cells=dict(raw["cells"]),
            checkpoints=dict(raw["checkpoints"]),
            discrepancies=dict(raw["discrepancies"]),
        )

    def dump(self) -> dict[str, Any]:
        """To a table value."""
        return {
            "applied": self.applied,
            "cells": self.cells,
            "checkpoints": self.checkpoints,
            "discrepancies": self.discrepancies,
        }


@dataclass
class FirstUse:
    """The citation that made a user country a user of a provider country's IRCCs."""

    cpc_uid: str
    ircc: str
    at: str
    offset: int
    ircc_uid: str | None = None
    cna: str | None = None


@dataclass
class ProviderState:
    """Table ``providers``, key ``<provider>``: event-time watermark, months, alerts."""

    applied: int = -1
    watermark: str | None = None
    months: list[str] = field(default_factory=list)
    reported: dict[str, int] = field(default_factory=dict)  # month -> offset that closed it
    firsts: dict[str, FirstUse] = field(default_factory=dict)  # user country -> first use

    @classmethod
    def load(cls, raw: dict[str, Any] | None) -> ProviderState:
        """From a table value (None: a provider never seen)."""
        if not raw:
            return cls()
        firsts = {u: FirstUse(**f) for u, f in raw.get("firsts", {}).items()}
        return cls(
            applied=raw["applied"],
            watermark=raw.get("watermark"),
            months=list(raw.get("months", [])),
            reported=dict(raw.get("reported", {})),
            firsts=firsts,
        )

    def dump(self) -> dict[str, Any]:
        """To a table value."""
        return {
            "applied": self.applied,
            "watermark": self.watermark,
            "months": self.months,
            "reported": self.reported,
            "firsts": {u: vars(f) for u, f in self.firsts.items()},
        }


@dataclass
class Step:
    """What one ``by-provider`` message changes; None: leave that entry as it is."""

    month: MonthCounts | None = None
    provider: ProviderState | None = None
    counted: int | None = None
    first_use: FirstUse | None = None  # (re)send its alert
    reports: list[str] = field(default_factory=list)  # months whose report to (re)send


def count_citation(
    c: Citation,
    offset: int,
    *,
    counted: int | None,
    month: MonthCounts,
    provider: ProviderState,
    grace: timedelta,
) -> Step:
    """Fold a resolved citation read at ``offset`` into its month and its provider."""
    step = Step()
    if counted is not None and counted != offset:
        return step  # counted already, from another copy of it
    if counted is None:
        step.counted = offset
    if month.applied < offset:
        cell = f"{c.user}|{c.ircc}"
        month.cells[cell] = month.cells.get(cell, 0) + 1
        for cp in c.checkpoints:
            month.checkpoints[cp] = month.checkpoints.get(cp, 0) + 1
        month.applied = offset
        step.month = month
    if provider.applied < offset:
        _advance(provider, c, offset, grace)
        step.provider = provider
    first = provider.firsts.get(c.user)
    if first is not None and first.offset == offset:
        step.first_use = first
    step.reports = sorted(m for m, o in provider.reported.items() if o == offset)
    return step


def _advance(p: ProviderState, c: Citation, offset: int, grace: timedelta) -> None:
    at = c.at.astimezone(UTC)
    if p.watermark is None or at > datetime.fromisoformat(p.watermark):
        p.watermark = at.isoformat()
    m = month_of(at)
    if m not in p.months:
        p.months = sorted([*p.months, m])
    if c.user not in p.firsts:
        p.firsts[c.user] = FirstUse(
            c.cpc_uid, c.ircc, at.isoformat(), offset, ircc_uid=c.ircc_uid, cna=c.cna
        )
    mark = datetime.fromisoformat(p.watermark)
    for month in p.months:
        if month not in p.reported and month_window(month)[1] + grace <= mark:
            p.reported[month] = offset
    p.applied = offset


def count_flag(f: Flag, offset: int, *, counted: int | None, month: MonthCounts) -> Step:
    """Fold a flagged discrepancy read at ``offset`` into its provider's month."""
    step = Step()
    if counted is not None and counted != offset:
        return step
    if counted is None:
        step.counted = offset
    if month.applied < offset:
        month.discrepancies[f.rule] = month.discrepancies.get(f.rule, 0) + 1
        month.applied = offset
        step.month = month
    return step

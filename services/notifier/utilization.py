"""Utilization alerts (``absch.utilization.v1``) as mail facts, and their localised view.

The monitor's analytics send ``utilization.first_use`` once per (provider, user) country
pair and ``utilization.report`` once per provider country and month, with event ids derived
from what they are about; the mail consumer's dedupe by event id makes each one mail once.
Pure: no I/O. Country names come from ``shared/records/countries.py`` in the recipient's
language.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.events.models import UtilizationFirstUse, UtilizationReport
from shared.records.countries import country_name

Counts = tuple[tuple[str, int], ...]
UidOf = Callable[[str], str | None]  # IRCC identifier -> UID of its latest known revision
Link = Callable[[str], str]  # UID -> permanent link
Label = Callable[[str], str]  # record identifier -> display name in the mail's language


@dataclass(frozen=True)
class FirstUseFacts:
    """What a first-use mail reports."""

    provider_country: str
    user_country: str
    ircc: str
    ircc_uid: str | None
    cpc_uid: str
    cited_on: str  # YYYY-MM-DD, UTC


@dataclass(frozen=True)
class IrccLine:
    """One cited IRCC of a report: its citations per user country."""

    ircc: str
    uid: str | None
    citations: int
    users: Counts


@dataclass(frozen=True)
class ReportFacts:
    """What a monthly report mail reports."""

    provider_country: str
    month: str
    citations: int
    users: Counts
    irccs: tuple[IrccLine, ...]
    checkpoints: Counts
    discrepancies: Counts


UtilizationFacts = FirstUseFacts | ReportFacts


def first_use_facts(data: UtilizationFirstUse, uid_of: UidOf) -> FirstUseFacts:
    """Facts of ``utilization.first_use``; the IRCC's UID from the event, else the view."""
    return FirstUseFacts(
        provider_country=data.provider_country.lower(),
        user_country=data.user_country.lower(),
        ircc=data.ircc,
        ircc_uid=data.ircc_uid or uid_of(data.ircc),
        cpc_uid=data.cpc_uid,
        cited_on=data.cited_at.date().isoformat(),
    )


def _counts(values: Mapping[str, int]) -> Counts:
    # Most cited first, then by key: the same report always reads the same.
    return tuple(sorted(values.items(), key=lambda item: (-item[1], item[0])))


def report_facts(data: UtilizationReport, uid_of: UidOf) -> ReportFacts:
    """Facts of ``utilization.report``; IRCC UIDs from the view (the report has identifiers)."""
    return ReportFacts(
        provider_country=data.provider_country.lower(),
        month=data.month,
        citations=data.citations,
        users=_counts(data.users),
        irccs=tuple(
            IrccLine(i.ircc, uid_of(i.ircc), i.citations, _counts(i.users)) for i in data.irccs
        ),
        checkpoints=_counts(data.checkpoints),
        discrepancies=_counts(data.discrepancies),
    )


def subject_facts(facts: UtilizationFacts | None, language: str) -> dict[str, str]:
    """Placeholders of the utilization subjects: country names in ``language``, month."""
    if isinstance(facts, FirstUseFacts):
        return {
            "provider_country": country_name(facts.provider_country, language),
            "user_country": country_name(facts.user_country, language),
            "month": "",
        }
    if isinstance(facts, ReportFacts):
        provider = country_name(facts.provider_country, language)
        return {"provider_country": provider, "user_country": "", "month": facts.month}
    return {"provider_country": "", "user_country": "", "month": ""}


def view(
    facts: UtilizationFacts, language: str, messages: Mapping[str, Any], *, link: Link, label: Label
) -> dict[str, Any]:
    """The template values of a utilization mail in ``language``."""
    if isinstance(facts, FirstUseFacts):
        user = country_name(facts.user_country, language)
        return {
            "now_utilized": str(messages["utilization"]["now_utilized"]).format(country=user),
            "provider": country_name(facts.provider_country, language),
            "user": user,
            "ircc": facts.ircc_uid or facts.ircc,
            "ircc_link": link(facts.ircc_uid) if facts.ircc_uid else None,
            "cpc_uid": facts.cpc_uid,
            "cited_on": facts.cited_on,
        }
    return {
        "provider": country_name(facts.provider_country, language),
        "month": facts.month,
        "citations": facts.citations,
        "users": _by_country(facts.users, language),
        "irccs": [
            {
                "ircc": line.uid or line.ircc,
                "link": link(line.uid) if line.uid else None,
                "citations": line.citations,
                "users": _by_country(line.users, language),
            }
            for line in facts.irccs
        ],
        "checkpoints": [f"{label(ident)} ({n})" for ident, n in facts.checkpoints],
        "discrepancies": [f"{rule} ({n})" for rule, n in facts.discrepancies],
    }


def _by_country(counts: Counts, language: str) -> str:
    return "; ".join(f"{country_name(code, language)} ({n})" for code, n in counts)

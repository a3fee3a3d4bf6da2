"""Builders of checkpoint communiqués (``absCheckpointCommunique``) for tests."""

from __future__ import annotations

from typing import Any

from tests.support.records import header


def communique(
    gov: str,
    checkpoints: list[str],
    *,
    irccs: list[str] | None = None,
    source_countries: list[str] | None = None,
    entity_who_granted_pic: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A valid CPC; with ``irccs`` on the IRCC branch, else on the no-IRCC branch [K1]."""
    body: dict[str, Any] = {
        "header": header("absCheckpointCommunique"),
        "government": {"identifier": gov},
        "title": {"en": "Due diligence declaration"},
        "absCheckpoints": [{"identifier": c} for c in checkpoints],
        "description": {"en": "Research on soil bacteria, pre-commercialisation stage"},
        "dateCollected": "2025-03-01",
    }
    if irccs is not None:
        body["absIRCCs"] = [{"identifier": i} for i in irccs]
    else:
        body["absIRCCsNotAvailable"] = True
        body["sourceCountries"] = [{"identifier": c} for c in source_countries or ["br"]]
        body["subjectMatter"] = {"en": "Ant specimens"}
        if entity_who_granted_pic:
            body["entityWhoGrantedPIC"] = {"identifier": entity_who_granted_pic}
    body.update(extra)
    return body


def identifier(record: dict[str, Any]) -> str:
    """A record's header.identifier."""
    return str(record["header"]["identifier"])
